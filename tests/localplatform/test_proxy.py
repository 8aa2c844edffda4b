"""The gateway's proxy core against a scripted upstream, all on loopback in one event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from localplatform.proxy import DownstreamProtocol, Request, UpstreamError, UpstreamPool

pytestmark = pytest.mark.integration

CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
)


BIG = bytes(range(256)) * (16 * 1024)  # 4 MiB


def canned(path: bytes) -> bytes:
    if path == b"/chunked":
        return CHUNKED
    if path == b"/big":
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BIG), BIG)
    body = path
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


class Upstream(asyncio.Protocol):
    """Answers each request with its path; counts connections; may close when idle."""

    connections = 0
    close_after_response = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        type(self).connections += 1
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buf = rest[length:]
            method, path, _ = head.split(b"\r\n")[0].split(b" ")
            out = canned(path)
            if method == b"HEAD":
                out = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
            self.transport.write(out)  # type: ignore[attr-defined]
            if type(self).close_after_response:
                self.transport.close()


async def exchange(port: int, raw: bytes, until: Callable[[bytes], bool]) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = b""
    while not until(data):
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        data += chunk
    writer.close()
    return data


def run(scenario: Callable[[int], Awaitable[None]], *, max_body: int = 1 << 20) -> None:
    async def main() -> None:
        Upstream.connections = 0
        Upstream.close_after_response = False
        loop = asyncio.get_running_loop()
        up = await loop.create_server(Upstream, "127.0.0.1", 0)
        pool = UpstreamPool("127.0.0.1", int(up.sockets[0].getsockname()[1]))

        async def handler(req: Request, down: DownstreamProtocol) -> None:
            try:
                keep = await pool.forward(req.encode(req.path), down, req.method == b"HEAD")
                down.finish(keep and req.keep_alive)
            except UpstreamError as err:
                down.send(
                    f"HTTP/1.1 502 Bad Gateway\r\nContent-Length: {len(str(err))}\r\n\r\n{err}".encode(),
                    False,
                )

        conns: set[DownstreamProtocol] = set()
        gw = await loop.create_server(
            lambda: DownstreamProtocol(handler, conns, max_body), "127.0.0.1", 0
        )
        try:
            await scenario(int(gw.sockets[0].getsockname()[1]))
        finally:
            pool.close()
            gw.close()
            up.close()
            await gw.wait_closed()
            await up.wait_closed()

    asyncio.run(main())


def test_keep_alive_and_pipelined_requests_share_one_upstream_connection() -> None:
    async def scenario(port: int) -> None:
        raw = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /bb HTTP/1.1\r\nHost: x\r\n\r\n"
        data = await exchange(port, raw, lambda d: d.endswith(b"/bb"))
        assert data.count(b"HTTP/1.1 200 OK") == 2 and data.endswith(b"/bb")
        assert data.index(b"/a") < data.index(b"/bb"), "answers stay in order"
        assert Upstream.connections == 1

    run(scenario)


def test_chunked_response_and_head_pass_through() -> None:
    async def scenario(port: int) -> None:
        data = await exchange(
            port, b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n", lambda d: d.endswith(b"0\r\n\r\n")
        )
        assert data == CHUNKED
        head = await exchange(
            port,
            b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n",
            lambda d: d.endswith(b"/after"),
        )
        assert head.startswith(b"HTTP/1.1 200 OK\r\nContent-Length: 100") and head.endswith(
            b"/after"
        )

    run(scenario)


def test_a_connection_the_instance_closed_when_idle_is_replaced_transparently() -> None:
    async def scenario(port: int) -> None:
        Upstream.close_after_response = True
        for path in (b"/one", b"/two", b"/three"):
            data = await exchange(
                port, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path, lambda d, p=path: d.endswith(p)
            )
            assert data.endswith(path)
        assert Upstream.connections == 3

    run(scenario)


def test_malformed_request_gets_400_and_oversized_body_413() -> None:
    async def scenario(port: int) -> None:
        bad = await exchange(port, b"NOT HTTP\r\n\r\n", lambda d: False)
        assert bad.startswith(b"HTTP/1.1 400") and b"malformed HTTP request" in bad
        big = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000
        too = await exchange(port, big, lambda d: False)
        assert too.startswith(b"HTTP/1.1 413") and b"MLFN_MAX_BODY_BYTES" in too

    run(scenario, max_body=1000)


def test_chunked_request_body_is_forwarded_with_a_length() -> None:
    async def scenario(port: int) -> None:
        raw = (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        data = await exchange(port, raw, lambda d: d.endswith(b"/echo"))
        assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"/echo")

    run(scenario)


def test_a_large_response_reaches_a_slow_client_intact() -> None:
    async def scenario(port: int) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        await asyncio.sleep(0.2)  # a slow client: the gateway must pause the instance, not buffer
        body = await asyncio.wait_for(reader.readexactly(len(BIG)), 10)
        assert body == BIG
        writer.write(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        tail = await asyncio.wait_for(reader.readuntil(b"/after"), 5)
        assert tail.endswith(b"/after")
        writer.close()

    run(scenario)
