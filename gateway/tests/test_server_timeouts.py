"""Slow or stalled clients on the production server (uvicorn, as `serve`
runs it) are closed: a request head that never completes within
GATEWAY_HEADER_TIMEOUT, a kept-alive connection idle past
GATEWAY_KEEP_ALIVE_TIMEOUT, and a body shorter than its Content-Length
(408 after PROXY_BODY_READ_TIMEOUT)."""

import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from conftest import IssuedKey
from proxy.tests.live import LiveGateway

HEADER_TIMEOUT, KEEP_ALIVE, BODY_TIMEOUT = 1.0, 1, 1.0
SLACK = 2.0  # what a loaded machine may add
WAIT = 10.0  # the longest any read here waits (uvicorn alone would wait forever)


@pytest.fixture(scope="module")
def uvicorn_gateway(gateway_config: None) -> Iterator[LiveGateway]:
    env = {
        "GATEWAY_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "GATEWAY_KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE),
        "PROXY_BODY_READ_TIMEOUT": str(BODY_TIMEOUT),
    }
    live = LiveGateway(server="uvicorn", env=env).start()
    yield live
    live.terminate()


def connect(gateway: LiveGateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=WAIT)
    sock.settimeout(WAIT)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and the seconds that took
    (socket.timeout if it never closes within WAIT)."""
    started = time.monotonic()
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received, time.monotonic() - started


def read_response(sock: socket.socket) -> bytes:
    """One whole response (a Content-Length or a chunked body), leaving the connection open."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += recv_some(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    fields = dict(line.split(b": ", 1) for line in head.lower().split(b"\r\n")[1:])
    if fields.get(b"transfer-encoding") == b"chunked":
        while not body.endswith(b"0\r\n\r\n"):
            body += recv_some(sock)
    else:
        while len(body) < int(fields[b"content-length"]):
            body += recv_some(sock)
    return head + b"\r\n\r\n" + body


def recv_some(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    assert chunk, "the server closed the connection mid-response"
    return chunk


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # connected, nothing sent
        b"POST /v1/chat/compl",  # half a request line
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Ty",  # headers that never end
    ],
    ids=["nothing", "half-request-line", "unfinished-headers"],
)
def test_a_request_head_that_never_completes_is_closed_within_the_header_timeout(
    uvicorn_gateway: LiveGateway, sent: bytes
) -> None:
    with connect(uvicorn_gateway) as sock:
        sock.sendall(sent)
        received, elapsed = read_until_closed(sock)
    assert received == b""
    assert elapsed < HEADER_TIMEOUT + SLACK


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(uvicorn_gateway: LiveGateway) -> None:
    with connect(uvicorn_gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received, elapsed = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 200")
    assert elapsed < KEEP_ALIVE + SLACK


def test_a_second_request_on_a_kept_alive_connection_is_answered(uvicorn_gateway: LiveGateway) -> None:
    """The head deadline is per request: the first one's does not cut the second."""
    with connect(uvicorn_gateway) as sock:
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200")


def test_a_request_head_larger_than_the_cap_is_refused(uvicorn_gateway: LiveGateway) -> None:
    with connect(uvicorn_gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Junk: " + b"a" * 100_000 + b"\r\n\r\n")
        received, _ = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 400")


def test_a_body_shorter_than_its_content_length_gets_408_after_the_body_timeout(
    uvicorn_gateway: LiveGateway, key: IssuedKey
) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + key.plaintext.encode() + b"\r\nContent-Length: 100\r\n\r\n"
    )
    with connect(uvicorn_gateway) as sock:
        sock.sendall(head + b'{"model": ')
        started = time.monotonic()
        received = read_response(sock)
        elapsed = time.monotonic() - started
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408")
    assert orjson.loads(rest.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_body_timeout"
    assert BODY_TIMEOUT * 0.9 < elapsed < BODY_TIMEOUT + SLACK
