"""Our load generator against wrk, side by side, each pinned to one core, one trivial server.

    .venv/bin/python benchmarks/loadgen.py [--seconds 5] [--client-core 0] [--server-core 1]

The server (a keep-alive HTTP/1.1 responder on a raw uvloop protocol, far faster than either
client) runs on ``--server-core``; wrk (Debian package ``wrk``) and our generator each run in
their own process pinned to ``--client-core``, one after the other. Printed:

* wrk's rate: ``wrk -t1 -c64`` (closed loop, its maximum);
* our maximum rates: closed loop at concurrency 64 (the like-for-like figure), and open loop:
  the highest Poisson rate sustained (every planned request sent and answered, throughput
  >= 98 % of the offered rate, schedule lag p99 <= 5 ms), found by doubling then bisecting;
* the P99 our generator adds at 1,000 and 5,000 req/s (open loop, Poisson): its P99, measured
  from the intended send times, minus the median round trip of wrk with one connection (the
  server and loopback); our P99 itself bounds it from above.

Other processes on the same cores skew every figure: the script prints the load average first,
and each client's CPU time per request (user + system), which contention barely changes: one
free core would sustain about 1 / that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_MAX_LAG_MS = 5.0
"""Past its capacity a generator's lag jumps to hundreds of ms; 5 ms tells that cliff from the
few ms a busy machine's scheduler adds to any sleeper (2 ms is the bar for a trustworthy step)."""
_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class _Responder(asyncio.Protocol):
    """Answers each request (headers, then Content-Length bytes of body) with a fixed 200."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        answers = 0
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            length = 0
            for line in self.buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                break
            self.buf = self.buf[end + 4 + length :]
            answers += 1
        if answers and self.transport is not None:
            self.transport.write(_RESPONSE * answers)


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Responder, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


async def _client(args: argparse.Namespace) -> dict[str, Any]:
    from autotune.loadgen import Target, run_closed_loop, run_open_loop

    target = Target(url=args.url, method="GET")
    cpu = time.process_time()
    if args.client == "closed":
        result = await run_closed_loop(target, concurrency=64, duration_s=args.seconds)
    else:
        result = await run_open_loop(
            target, rate_rps=args.rate, duration_s=args.seconds, warmup_s=0.5
        )
    report = result.as_dict()
    cpu_s = time.process_time() - cpu
    report["cpu_share"] = cpu_s / (args.seconds + 0.5)
    report["cpu_us_per_request"] = cpu_s / max(1, result.requests) * 1e6
    return report


def _run_loop(main: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _ours(url: str, core: int, mode: str, seconds: float, rate: float = 0.0) -> dict[str, Any]:
    command = [sys.executable, __file__, "--client", mode, "--url", url, "--seconds",
               str(seconds), "--rate", str(rate), "--client-core", str(core)]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def _wrk(url: str, core: int, connections: int, seconds: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, CPU µs per request) of one wrk run."""
    command = ["taskset", "-c", str(core), "wrk", "-t1", f"-c{connections}",
               f"-d{max(1, round(seconds))}s", "--latency", url]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\b", out, re.MULTILINE)
    if rate is None or p50 is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p50.group(2)]
    requests = float(rate.group(1)) * max(1, round(seconds))
    return float(rate.group(1)), float(p50.group(1)) * scale, cpu_s / requests * 1e6


def _sustained(report: dict[str, Any], rate: float) -> bool:
    return bool(
        report["errors"] == 0
        and report["throughput_rps"] >= 0.98 * rate
        and report["schedule_lag_p99_ms"] <= _MAX_LAG_MS
    )


def _max_open_rate(url: str, core: int, seconds: float) -> tuple[float, list[str]]:
    """Highest sustained open-loop rate: doubling from 2,000 req/s, then 3 bisections."""
    log: list[str] = []

    def trial(rate: float) -> bool:
        report = _ours(url, core, "open", seconds, rate)
        ok = _sustained(report, rate)
        log.append(
            f"  open {rate:>8,.0f} req/s: throughput {report['throughput_rps']:>8,.0f}, "
            f"lag p99 {report['schedule_lag_p99_ms']:6.2f} ms, P99 {report['p99_ms']:7.2f} ms, "
            f"cpu {report['cpu_share']:.0%} -> {'sustained' if ok else 'not sustained'}"
        )
        return ok

    lo, hi = 0.0, 2000.0
    while trial(hi):
        lo, hi = hi, hi * 2
        if hi > 128_000:
            return lo, log
    for _ in range(3):
        mid = (lo + hi) / 2
        if trial(mid):
            lo = mid
        else:
            hi = mid
    return lo, log


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument("--client-core", type=int, default=0)
    parser.add_argument("--server-core", type=int, default=1)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=["open", "closed"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        os.sched_setaffinity(0, {args.server_core})
        _run_loop(_serve())
        return 0
    if args.client:
        os.sched_setaffinity(0, {args.client_core})
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        print(json.dumps(_run_loop(_client(args))))
        return 0

    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 1
    cores = os.cpu_count() or 1
    if cores < 2:
        print("warning: one core only: client and server share it", file=sys.stderr)
        args.server_core = args.client_core = 0
    print(
        f"load average {os.getloadavg()[0]:.2f} on {cores} cores; client core "
        f"{args.client_core}, server core {args.server_core}; {args.seconds:g} s per run"
    )
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--server-core", str(args.server_core)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{int(server.stdout.readline())}/"
        wrk_rps, _, wrk_cpu_us = _wrk(url, args.client_core, 64, args.seconds)
        _, floor_ms, _ = _wrk(url, args.client_core, 1, args.seconds)
        closed = _ours(url, args.client_core, "closed", args.seconds)
        open_max, log = _max_open_rate(url, args.client_core, min(args.seconds, 3.0))
        added = {rate: _ours(url, args.client_core, "open", args.seconds, rate)
                 for rate in (1000.0, 5000.0)}  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)
    print("\n".join(log))
    print(f"wrk -t1 -c64 (closed loop)          {wrk_rps:>10,.0f} req/s")
    print(f"ours, closed loop, concurrency 64   {closed['throughput_rps']:>10,.0f} req/s"
          f"   ratio to wrk {closed['throughput_rps'] / wrk_rps:.2f}")  # fmt: skip
    print(f"ours, open loop, max sustained      {open_max:>10,.0f} req/s"
          f"   ratio to wrk {open_max / wrk_rps:.2f}")  # fmt: skip
    open_cpu_us = added[5000.0]["cpu_us_per_request"]
    print(
        f"CPU per request (user + system): wrk {wrk_cpu_us:.1f} µs, ours closed "
        f"{closed['cpu_us_per_request']:.1f} µs, ours open at 5,000 req/s {open_cpu_us:.1f} µs "
        f"-> one free core: ours open about {1e6 / open_cpu_us:,.0f} req/s, "
        f"wrk about {1e6 / wrk_cpu_us:,.0f} req/s"
    )
    print(f"server + loopback round trip (wrk -c1 P50) {floor_ms:.3f} ms")
    for rate, report in added.items():
        print(
            f"ours at {rate:>5,.0f} req/s: P99 {report['p99_ms']:6.2f} ms, "
            f"added P99 {report['p99_ms'] - floor_ms:6.2f} ms, "
            f"schedule lag p99 {report['schedule_lag_p99_ms']:5.2f} ms, "
            f"throughput {report['throughput_rps']:,.0f} req/s, cpu {report['cpu_share']:.0%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
