"""A WebSocket client connection that hands over every frame of a socket read at once.

It drives the ``websockets`` library's Sans-I/O client (:class:`websockets.client.
ClientProtocol`: the handshake, framing, masking, ping answers and the closing handshake are
the library's) over an asyncio stream. The library's own asyncio client wakes its reader once
per message; at tens of thousands of trades per second that wake-up costs as much as the work
on the trade. Here one read of the socket (up to 256 KiB: hundreds of frames) gives one list
of messages, handled in one go.

Liveness: :meth:`Connection.ping` sends a ping; :attr:`Connection.last_pong` says when the
last answer came. Any frame received refreshes :attr:`Connection.last_received`.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Sequence
from types import TracebackType

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosedError, InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

READ_BYTES = 256 * 1024


class Connection:
    def __init__(self, url: str, max_size: int = 2**23, open_timeout_s: float = 10.0) -> None:
        self.url = url
        self.uri = parse_uri(url)
        self.protocol = ClientProtocol(self.uri, max_size=max_size)
        self.open_timeout_s = open_timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_received = time.monotonic()
        self.last_pong = time.monotonic()
        self._fragments: list[bytes] = []
        self._pending: list[str | bytes] = []  # messages that arrived with the handshake

    async def __aenter__(self) -> Connection:
        await asyncio.wait_for(self._open(), self.open_timeout_s)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()

    async def _open(self) -> None:
        context = ssl.create_default_context() if self.uri.secure else None
        self.reader, self.writer = await asyncio.open_connection(
            self.uri.host,
            self.uri.port,
            ssl=context,
            server_hostname=self.uri.host if context else None,
            limit=READ_BYTES,
        )
        self.protocol.send_request(self.protocol.connect())
        await self._flush()
        while True:
            data = await self.reader.read(READ_BYTES)
            if not data:
                self.protocol.receive_eof()
            else:
                self.protocol.receive_data(data)
            events = self.protocol.events_received()
            for position, event in enumerate(events):
                if isinstance(event, Response):
                    if self.protocol.handshake_exc is not None:
                        raise self.protocol.handshake_exc
                    self._pending = self._messages(events[position + 1 :])
                    await self._flush()
                    return
            if not data:
                raise InvalidHandshake("connection closed during the opening handshake")

    async def _flush(self) -> None:
        assert self.writer is not None
        data = self.protocol.data_to_send()
        if data:
            chunks = [chunk for chunk in data if chunk]
            if chunks:
                self.writer.write(b"".join(chunks))
            # An empty chunk: the library asks for the end of the TCP connection.
            if any(not chunk for chunk in data) and self.writer.can_write_eof():
                self.writer.write_eof()
            await self.writer.drain()

    def _messages(self, events: Sequence[object]) -> list[str | bytes]:
        out: list[str | bytes] = []
        text = Opcode.TEXT
        for event in events:
            if not isinstance(event, Frame):
                continue
            op = event.opcode
            if op is text and event.fin and not self._fragments:  # the common message
                data = event.data  # bytes or bytearray: both decode without a copy first
                out.append(data.decode() if type(data) is not memoryview else bytes(data).decode())
                continue
            if op is Opcode.TEXT or op is Opcode.BINARY or op is Opcode.CONT:
                if event.fin and not self._fragments:
                    data = bytes(event.data)
                else:
                    self._fragments.append(bytes(event.data))
                    if not event.fin:
                        continue
                    data, self._fragments = b"".join(self._fragments), []
                out.append(data.decode() if op is Opcode.TEXT else data)
            elif op is Opcode.PONG:
                self.last_pong = time.monotonic()
        return out

    async def recv_batch(self) -> list[str | bytes]:
        """The messages of the next socket read (possibly none: control frames only).
        Raises ``ConnectionClosedError`` once the connection is over."""
        if self._pending:
            out, self._pending = self._pending, []
            return out
        assert self.reader is not None
        if self.protocol.state is State.CLOSED:
            raise ConnectionClosedError(self.protocol.close_rcvd, self.protocol.close_sent)
        data = await self.reader.read(READ_BYTES)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        self.last_received = time.monotonic()
        out = self._messages(self.protocol.events_received())
        await self._flush()  # pongs, close answers
        if not data and not out:
            raise ConnectionClosedError(self.protocol.close_rcvd, self.protocol.close_sent)
        return out

    async def send(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        await self._flush()

    async def ping(self) -> None:
        self.protocol.send_ping(os.urandom(4))
        await self._flush()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake, then drop the socket (no waiting for the answer)."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            await self._flush()
        self.abort()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
