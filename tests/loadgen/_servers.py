"""Tiny servers with known behaviour, run in a subprocess by the ``servers`` fixture.

One aiohttp application; each path is a behaviour, tuned by its query string:

    /ok                          200 at once
    /law?fixed_ms=F&exp_ms=E&seed=S  200 after F + Exp(mean E) ms; the n-th request to a seed
                                 waits the n-th draw of ``random.Random(S).expovariate(1 / E)``
    /freeze?period_s=P&freeze_s=Z  200 at once, except that every P s (from the server's start)
                                 the server stalls for Z s: requests arriving then wait for its end
    /share503?p=S                503 with probability S (seeded), else 200
    /status/{code}               that status
    /sleep?ms=M                  200 after M ms
    /serial?service_ms=M         one request at a time, M ms each: capacity 1000/M req/s
    /queue?service_ms=M&max_queue=Q  /serial, but 503 at once when Q requests already wait
    /stall_once?key=K&service_ms=M&at_s=T&stall_ms=Z  /serial (per key), except that the first
                                 request to key K arriving T s or more after the key's first request
                                 holds the server Z ms (one stall of a shared core)
                                 (TorchServe's full job queue)
    /auth                        200 with "Authorization: Bearer token", else 401
    /batch?size=B&delay_ms=D&service_ms=M  answers in batches, like TorchServe's batching: a
                                 batch leaves when B requests wait or D ms after its first one,
                                 and is answered M ms later (idle latency D + M)
    /expect?method=M&length=N    200 when the request has that method and body length, else 400
    /chunked                     200 with a chunked body
    /close                       200 with "Connection: close"
    /counted                     200; counted in /metrics as model "m": 1 ms in the server each,
                                 0.25 ms of it queued (TorchServe's Prometheus counters)
    /metrics                     those counters, plus an "other" model's

A second, raw TCP port answers every request with bytes that are not HTTP. The process prints
``{"http": port, "raw": port}`` on one line, then serves until it is terminated.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

from aiohttp import web

_rng = random.Random(1234)
_law_rngs: dict[int, random.Random] = {}
_locks: dict[str, asyncio.Lock] = {}
_waiting: dict[str, int] = {}
_start = time.monotonic()


async def ok(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok")


async def law(request: web.Request) -> web.Response:
    await request.read()
    fixed_ms = float(request.query.get("fixed_ms", "20"))
    exp_ms = float(request.query.get("exp_ms", "20"))
    seed = int(request.query.get("seed", "0"))
    rng = _law_rngs.setdefault(seed, random.Random(seed))
    await asyncio.sleep((fixed_ms + rng.expovariate(1.0 / exp_ms)) / 1000.0)
    return web.Response(text="ok")


async def freeze(request: web.Request) -> web.Response:
    await request.read()
    period_s = float(request.query.get("period_s", "10"))
    freeze_s = float(request.query.get("freeze_s", "1"))
    phase = (time.monotonic() - _start) % period_s
    if phase >= period_s - freeze_s:
        await asyncio.sleep(period_s - phase)
    return web.Response(text="ok")


async def share503(request: web.Request) -> web.Response:
    await request.read()
    if _rng.random() < float(request.query.get("p", "0.1")):
        return web.Response(status=503, text="no worker")
    return web.Response(text="ok")


async def status(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=int(request.match_info["code"]), text="status")


async def sleep(request: web.Request) -> web.Response:
    await request.read()
    await asyncio.sleep(float(request.query.get("ms", "100")) / 1000.0)
    return web.Response(text="ok")


async def serial(request: web.Request) -> web.Response:
    await request.read()
    service_ms = request.query.get("service_ms", "10")
    lock = _locks.setdefault(service_ms, asyncio.Lock())
    async with lock:
        await asyncio.sleep(float(service_ms) / 1000.0)
    return web.Response(text="ok")


_first_seen: dict[str, float] = {}
_stalled: set[str] = set()


async def stall_once(request: web.Request) -> web.Response:
    await request.read()
    key = request.query.get("key", "")
    lock = _locks.setdefault(f"stall {key}", asyncio.Lock())
    now = time.monotonic()
    first = _first_seen.setdefault(key, now)
    service_s = float(request.query.get("service_ms", "10")) / 1000.0
    if key not in _stalled and now - first >= float(request.query.get("at_s", "4")):
        _stalled.add(key)
        service_s += float(request.query.get("stall_ms", "600")) / 1000.0
    async with lock:
        await asyncio.sleep(service_s)
    return web.Response(text="ok")


async def auth(request: web.Request) -> web.Response:
    await request.read()
    if request.headers.get("Authorization") != "Bearer token":
        return web.Response(status=401, text="who are you")
    return web.Response(text="ok")


async def queue(request: web.Request) -> web.Response:
    await request.read()
    service_ms = request.query.get("service_ms", "10")
    lock = _locks.setdefault(f"queue {service_ms}", asyncio.Lock())
    waiting = _waiting.get(service_ms, 0)
    if lock.locked() and waiting >= int(request.query.get("max_queue", "5")):
        return web.Response(status=503, text="queue full")
    _waiting[service_ms] = waiting + 1
    try:
        await lock.acquire()
    finally:
        _waiting[service_ms] -= 1
    try:
        await asyncio.sleep(float(service_ms) / 1000.0)
    finally:
        lock.release()
    return web.Response(text="ok")


class _Batcher:
    def __init__(self, size: int, delay_s: float, service_s: float) -> None:
        self.size, self.delay_s, self.service_s = size, delay_s, service_s
        self.waiting: list[asyncio.Future[None]] = []
        self.generation = 0

    def add(self) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        if len(self.waiting) == 1:
            self._arm()
        if len(self.waiting) >= self.size:
            self._flush()
        return future

    def _arm(self) -> None:
        generation = self.generation
        asyncio.get_running_loop().call_later(self.delay_s, self._expire, generation)

    def _expire(self, generation: int) -> None:
        if generation == self.generation and self.waiting:
            self._flush()

    def _flush(self) -> None:
        batch, self.waiting = self.waiting[: self.size], self.waiting[self.size :]
        self.generation += 1
        if self.waiting:
            self._arm()

        def answer() -> None:
            for future in batch:
                if not future.done():
                    future.set_result(None)

        asyncio.get_running_loop().call_later(self.service_s, answer)


_batchers: dict[str, _Batcher] = {}


async def batch(request: web.Request) -> web.Response:
    await request.read()
    query = request.query
    batcher = _batchers.setdefault(
        request.query_string,
        _Batcher(
            int(query.get("size", "4")),
            float(query.get("delay_ms", "150")) / 1000.0,
            float(query.get("service_ms", "10")) / 1000.0,
        ),
    )
    await batcher.add()
    return web.Response(text="ok")


async def expect(request: web.Request) -> web.Response:
    body = await request.read()
    method = request.query.get("method", "POST")
    length = int(request.query.get("length", "0"))
    if request.method != method or len(body) != length:
        return web.Response(status=400, text=f"got {request.method} {len(body)}")
    return web.Response(text="ok")


async def chunked(request: web.Request) -> web.StreamResponse:
    await request.read()
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for part in (b"hello ", b"chunked ", b"world"):
        await response.write(part)
    await response.write_eof()
    return response


_counted = [0]


async def counted(request: web.Request) -> web.Response:
    await request.read()
    _counted[0] += 1
    return web.Response(text="ok")


async def metrics(request: web.Request) -> web.Response:
    n = _counted[0]
    lines = []
    for name, per_request in (
        ("ts_inference_requests_total", 1),
        ("ts_inference_latency_microseconds", 1000),
        ("ts_queue_latency_microseconds", 250),
    ):
        lines.append(f"# TYPE {name} counter")
        lines.append(
            f'{name}{{model_name="m",model_version="default",hostname="h"}} {n * per_request}.0'
        )
        lines.append(f'{name}{{model_name="other",model_version="default",hostname="h"}} 12345.0')
    return web.Response(text="\n".join(lines) + "\n")


async def close(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok", headers={"Connection": "close"})


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.read(65536):
            writer.write(b"SPEAKING NO HTTP\r\n\r\n")
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main() -> None:
    app = web.Application()
    app.router.add_route("*", "/ok", ok)
    app.router.add_route("*", "/law", law)
    app.router.add_route("*", "/freeze", freeze)
    app.router.add_route("*", "/share503", share503)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_route("*", "/sleep", sleep)
    app.router.add_route("*", "/serial", serial)
    app.router.add_route("*", "/stall_once", stall_once)
    app.router.add_route("*", "/auth", auth)
    app.router.add_route("*", "/queue", queue)
    app.router.add_route("*", "/expect", expect)
    app.router.add_route("*", "/batch", batch)
    app.router.add_route("*", "/counted", counted)
    app.router.add_route("GET", "/metrics", metrics)
    app.router.add_route("*", "/chunked", chunked)
    app.router.add_route("*", "/close", close)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    http_port = runner.addresses[0][1]
    raw = await asyncio.start_server(_garbage, "127.0.0.1", 0)
    raw_port = raw.sockets[0].getsockname()[1]
    print(json.dumps({"http": http_port, "raw": raw_port}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
