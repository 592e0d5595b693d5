"""GET requests over kept-alive HTTP/1.1 connections, for a load generator that must cost little.

httpx spends about 3 ms of CPU per request (measured in benchmarks/api_load.py on the reference
machine): at 400 requests/s that is more than a core, on a 2-core machine where the server needs
both. This sends a request as the bytes it is and reads the answer by its Content-Length, a few
tens of microseconds. Only what the benchmark needs: GET, a fixed header set, answers that carry a
Content-Length (uvicorn gives every JSON answer one).
"""

import asyncio


class KeepAliveGets:
    """At most `connections` open connections to one server; each GET takes an idle one (or opens
    one while under the limit, or waits for one) and gives it back when its answer is read."""

    def __init__(self, host: str, port: int, headers: dict[str, str], *, connections: int) -> None:
        self._host, self._port = host, port
        self._headers = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._opened = 0
        self._limit = connections

    async def get(self, path: str) -> int:
        """The status of `GET path`, its body read and dropped."""
        reader, writer = await self._connection()
        try:
            request = f"GET {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n{self._headers}\r\n"
            writer.write(request.encode())
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(_content_length(head))
        except BaseException:
            writer.close()
            self._opened -= 1
            raise
        self._idle.put_nowait((reader, writer))
        return int(head[9:12])

    async def close(self) -> None:
        while not self._idle.empty():
            _, writer = self._idle.get_nowait()
            writer.close()
            self._opened -= 1

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._idle.empty() and self._opened < self._limit:
            self._opened += 1
            try:
                return await asyncio.open_connection(self._host, self._port)
            except BaseException:
                self._opened -= 1
                raise
        return await self._idle.get()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError(f"an answer without Content-Length: {head[:200]!r}")
