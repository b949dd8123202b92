"""The HTTP/1.1 answer parser, fed byte by byte and in one piece, with a fake engine."""

from __future__ import annotations

from typing import Any

import pytest

from autotune.loadgen import Target
from autotune.loadgen._http import _Connection, build_request


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True


class FakeEngine:
    head_request = False

    def __init__(self) -> None:
        self.completed: list[int] = []
        self.failed: list[str] = []

    def _complete(self, conn: _Connection) -> None:
        self.completed.append(conn.status)
        conn.rid = -1

    def _fail(self, conn: _Connection, kind: str) -> None:
        self.failed.append(kind)
        conn.rid = -1

    def _lost(self, conn: _Connection) -> None:
        pass


def _answer(raw: bytes, *, split: int | None) -> tuple[FakeEngine, _Connection]:
    engine = FakeEngine()
    conn = _Connection(engine)  # type: ignore[arg-type]
    transport: Any = FakeTransport()
    conn.connection_made(transport)
    conn.send(1, 0.0, b"GET / HTTP/1.1\r\n\r\n")
    pieces = [raw] if split is None else [raw[i : i + split] for i in range(0, len(raw), split)]
    for piece in pieces:
        conn.data_received(piece)
    return engine, conn


GOOD = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nTrailer: 1\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 204 No Content\r\n\r\n",
]


@pytest.mark.parametrize("raw", GOOD)
@pytest.mark.parametrize("split", [None, 1, 7])
def test_complete_answers_are_read_whatever_the_packet_boundaries(
    raw: bytes, split: int | None
) -> None:
    engine, _ = _answer(raw, split=split)
    assert len(engine.completed) == 1
    assert engine.failed == []


def test_an_incomplete_answer_is_not_complete() -> None:
    engine, _ = _answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", split=None)
    assert engine.completed == []


def test_connection_close_and_http_10_are_not_reused() -> None:
    _, conn = _answer(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", split=None
    )
    assert conn.must_close
    _, conn = _answer(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", split=None)
    assert conn.must_close


@pytest.mark.parametrize(
    "connection", [b"close, x", b"x, close", b"Close", b"keep-alive, close", b"upgrade,close"]
)
def test_a_close_token_anywhere_in_connection_closes(connection: bytes) -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: " + connection + b"\r\nContent-Length: 0\r\n\r\n"
    engine, conn = _answer(raw, split=None)
    assert engine.completed == [200]
    assert conn.must_close


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_keep_alive_answers_are_reused(raw: bytes) -> None:
    engine, conn = _answer(raw, split=None)
    assert engine.completed == [200] and not conn.must_close


def test_a_body_without_framing_ends_when_the_server_closes() -> None:
    engine, conn = _answer(b"HTTP/1.1 200 OK\r\n\r\nsome of the body", split=3)
    assert engine.completed == [] and conn.body_until_close and conn.must_close
    # a framed body cut short by a close is not an answer
    _, conn = _answer(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\nabc", split=None
    )
    assert not conn.body_until_close


def test_a_keep_alive_connection_reads_one_answer_after_another() -> None:
    engine, conn = _answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", split=None)
    conn.send(2, 0.0, b"GET / HTTP/1.1\r\n\r\n")
    for piece in (b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n", b"0\r\n\r\n"):
        conn.data_received(piece)
    assert engine.completed == [200, 503] and engine.failed == []


def test_a_head_longer_than_64_kib_is_malformed() -> None:
    raw = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n"
    engine, _ = _answer(raw, split=8192)
    assert engine.failed == ["malformed"]


@pytest.mark.parametrize(
    "raw",
    [
        b"SPEAKING NO HTTP\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\ntoo long",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n",  # two answers
    ],
)
def test_malformed_answers_fail(raw: bytes) -> None:
    engine, _ = _answer(raw, split=None)
    assert engine.failed == ["malformed"]


def test_the_request_is_built_once_with_host_headers_and_body() -> None:
    target = Target(
        url="http://example.com:8080/predictions/m?x=1",
        payload=b"abc",
        headers={"Authorization": "Bearer t"},
    )
    request, host, port, tls = build_request(target)
    assert (host, port, tls) == ("example.com", 8080, False)
    head, body = request.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /predictions/m?x=1 HTTP/1.1"
    assert "Host: example.com:8080" in lines
    assert "Authorization: Bearer t" in lines
    assert "Content-Length: 3" in lines
    assert body == b"abc"


def test_bad_targets_are_rejected() -> None:
    with pytest.raises(ValueError, match="url"):
        Target(url="ftp://host/x")
    with pytest.raises(ValueError, match="timeout_s"):
        Target(url="http://host/", timeout_s=0)
    with pytest.raises(ValueError, match="Header"):
        Target(url="http://host/", headers={"X": "a\r\nInjected: 1"})
