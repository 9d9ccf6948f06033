"""The HTTP/2 client connection: many exchanges (streams) at once on one connection, framed by the
`h2` library (mitmproxy's own HTTP/2 dependency). Plain text with prior knowledge (h2c) or TLS
after ALPN chose `h2`; mirror copies and the primary's attempts both use it (client.py).

An exchange is one stream. It has the same face as an HTTP/1.1 connection's exchange
(http1.Connection): `status`, `error`, `wire`, `first_byte`, `truncated`, `capture`,
`grpc_status`, `phase()`, `abort()`, `take_capture()`, so the writer treats both alike. Its
response body is discarded as it arrives (the window is given back at once), unless `capture`
asks to keep its first bytes; past the body limit the stream is reset, not the connection.

A peer that is not an HTTP/2 server, resets streams, sends GOAWAY or floods the connection with
frames that carry no response (SETTINGS, PING, PRIORITY, WINDOW_UPDATE, empty DATA, unknown
frames) ends each affected exchange with an error the writer classifies; nothing here waits
without a deadline of the caller's (the caller times every exchange).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from meshmirror.mirror.failures import ClosedEarly, InvalidRequest, ProtocolViolation, StreamReset
from meshmirror.mirror.request_head import Header, header_bytes, request_headers
from meshmirror.mirror.sockets import reset
from meshmirror.mirror.types import CapturedResponse, MirrorRequest

# Frames that carry no response, accepted in a row before the connection counts as flooded
# (Envoy's defaults are of the same order: 1,000 outbound control frames, 100 PRIORITY frames
# per stream).
MAX_IDLE_FRAMES = 1000
# Our replies (SETTINGS and PING acknowledgements, WINDOW_UPDATE) a peer may leave unread.
_MAX_UNREAD_REPLIES = 1024 * 1024
# The response header block, as HPACK counts it (each field: name + value + 32).
_MAX_HEADER_LIST = 64 * 1024
_CONNECT_WINDOW = 1024 * 1024  # flow-control window we give the connection and each stream
_INTERIM_LIMIT = 16  # as http1.MAX_INTERIM
_REFUSED = h2.errors.ErrorCodes.REFUSED_STREAM


class Http2Exchange:
    """One stream: a request sent and its response as it arrives."""

    __slots__ = (
        "conn",
        "stream_id",
        "waiter",
        "error",
        "error_phase",
        "status",
        "wire",
        "first_byte",
        "truncated",
        "capture",
        "captured",
        "fields",
        "trailers",
        "grpc_status",
        "reused",
        "retryable",
        "head_request",
        "sent",
        "_body",
        "_pending",
        "_interim",
        "_state",
    )

    def __init__(self, conn: Http2Connection, stream_id: int, head_request: bool) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.waiter: asyncio.Future[None] = conn.loop.create_future()
        self.error: BaseException | None = None
        self.error_phase = ""
        self.status = 0
        self.wire = 0  # response bytes: header blocks as HPACK counts them, and DATA
        self.first_byte = 0.0
        self.truncated = False
        self.capture = 0
        self.captured = bytearray()
        self.fields: tuple[Header, ...] = ()
        self.trailers: tuple[Header, ...] = ()
        self.grpc_status: int | None = None
        self.reused = conn.streams_opened > 1
        # Not processed by the peer (a GOAWAY below this stream, REFUSED_STREAM): may be sent
        # again, whatever the method (RFC 9113 8.7).
        self.retryable = False
        self.head_request = head_request
        self.sent = 0  # request bytes: the header list as HPACK counts it, and the body
        self._body = 0
        self._pending = memoryview(b"")
        self._interim = 0
        self._state = "waiting for response head"

    # -- the face http1.Connection shows the writer ----------------------------------------

    def phase(self) -> str:
        return self._state

    def abort(self) -> None:
        """Give the exchange up: the stream is reset, the connection carries on."""
        self.conn.reset(self, h2.errors.ErrorCodes.CANCEL)

    def take_capture(self) -> tuple[tuple[Header, ...], bytes, bool]:
        body = bytes(self.captured)
        self.captured = bytearray()
        return self.fields, body, self.truncated or self._body > len(body)

    def take_response(self) -> CapturedResponse:
        fields, body, truncated = self.take_capture()
        return CapturedResponse(self.status, b"", fields, body, truncated, self.trailers)

    # -- events, from the connection ------------------------------------------------------

    def _finish(self, error: BaseException | None) -> None:
        if self.waiter.done():
            return
        if error is not None:
            self.error_phase = self._state
            self.error = error
        self._state = "idle"
        self.waiter.set_result(None)

    def _headers(self, headers: list[Header], interim: bool) -> None:
        self.wire += header_bytes(headers)
        if not self.first_byte:
            self.first_byte = time.time()
        if interim:
            self._interim += 1
            if self._interim > _INTERIM_LIMIT:
                self.conn.reset(self, h2.errors.ErrorCodes.PROTOCOL_ERROR)
                self._finish(ProtocolViolation(f"more than {_INTERIM_LIMIT} interim responses"))
            return
        status = 0
        fields: list[Header] = []
        for name, value in headers:
            if name == b":status":
                status = int(value) if value.isdigit() else 0
            elif not name.startswith(b":"):
                fields.append((name, value))
                if name == b"grpc-status":
                    self.grpc_status = _grpc_status(value)
        self.status = status
        self.fields = tuple(fields)
        self._state = "reading response body"

    def _data(self, data: bytes, limit: int) -> bool:
        """Count (and keep, if capturing) body bytes; False once the limit is passed."""
        self.wire += len(data)
        if not self.first_byte:
            self.first_byte = time.time()
        room = limit - self._body
        if len(data) > room:
            data = data[: max(0, room)]
            self.truncated = True
        self._body += len(data)
        if self.capture:
            keep = self.capture - len(self.captured)
            if keep > 0:
                self.captured += data[:keep]
        return not self.truncated

    def _trailers(self, headers: list[Header]) -> None:
        self.wire += header_bytes(headers)
        # Plain tuples: hpack's HeaderTuple does not survive the pipe to the proxy (pickle).
        self.trailers = tuple((bytes(n), bytes(v)) for n, v in headers)
        for name, value in headers:
            if name == b"grpc-status":
                self.grpc_status = _grpc_status(value)


def _grpc_status(value: bytes) -> int | None:
    return int(value) if value.isdigit() and len(value) <= 3 else None


class Http2Connection(asyncio.Protocol):
    """One HTTP/2 client connection, owned by a pool (pool.EndpointPool)."""

    def __init__(
        self,
        owner: Any,
        limit: int,
        scheme: bytes,
        *,
        on_lost: Callable[[Http2Connection], None] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.owner = owner
        self.limit = limit  # response body bytes per exchange
        self.scheme = scheme
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.h2 = h2.connection.H2Connection(
            config=h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=True,
                validate_inbound_headers=True,
            )
        )
        self.streams: dict[int, Http2Exchange] = {}
        self.streams_opened = 0
        self.closed = False
        self.going_away = False  # GOAWAY received: no new stream
        self.error: BaseException | None = None
        self.settings_seen = False  # the peer's SETTINGS arrived: it speaks HTTP/2
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self._idle_frames = 0
        self._sending: list[Http2Exchange] = []  # bodies waiting for flow-control window

    # -- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _CONNECT_WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: _MAX_HEADER_LIST,
            },
        )
        # Some servers refuse a SETTINGS frame that repeats this default (httpcore does the same).
        del self.h2.local_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL]
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(_CONNECT_WINDOW)
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.settings_seen and data[:5] == b"HTTP/":
            self._fail(ProtocolViolation("mirror does not speak HTTP/2 (it answered HTTP/1.x)"))
            return
        try:
            events = self.h2.receive_data(data)
            for event in events:
                self._event(event)
                if self.closed:
                    return
        except h2.exceptions.H2Error as exc:
            self._fail(ProtocolViolation(f"HTTP/2 protocol error: {_short(exc)}"))
            return
        self._flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.settings_seen and self.error is None:
            self.error = ProtocolViolation(
                "mirror does not speak HTTP/2 (connection closed before its SETTINGS)"
            )
        error = self.error or exc
        for stream in list(self.streams.values()):
            stream._finish(error or ClosedEarly(stream.phase()))
        self.streams.clear()
        if not self.ready.done():
            self.ready.set_result(None)
        if self.on_lost is not None:
            self.on_lost(self)

    # -- used by the pool -------------------------------------------------------------------

    def usable(self) -> bool:
        transport = self.transport
        return (
            not self.closed
            and not self.going_away
            and transport is not None
            and not transport.is_closing()
        )

    def capacity(self) -> int:
        """Streams that may still be opened now."""
        if not self.usable():
            return 0
        peer_max = self.h2.remote_settings.max_concurrent_streams
        return max(0, min(peer_max, 1000) - len(self.streams))

    def send(
        self,
        request: MirrorRequest,
        authority: bytes,
        head_request: bool,
        headers: list[Header] | None = None,
    ) -> Http2Exchange:
        """Open a stream for `request` (`headers`: its `request_headers`, if made already); its
        `waiter` completes when the response has ended or failed. Raises InvalidRequest for a
        request HTTP/2 cannot carry."""
        if headers is None:
            headers = request_headers(request, self.scheme, authority)
        stream_id = self.h2.get_next_available_stream_id()
        self.streams_opened += 1
        exchange = Http2Exchange(self, stream_id, head_request)
        body = request.body
        try:
            self.h2.send_headers(stream_id, headers, end_stream=not body)
        except h2.exceptions.ProtocolError as exc:
            raise InvalidRequest(f"HTTP/2 refused the request: {_short(exc)}") from exc
        self.streams[stream_id] = exchange
        exchange.sent = header_bytes(headers) + len(body)
        if body:
            exchange._pending = memoryview(body)
            self._sending.append(exchange)
            self._pump()
        self._flush()
        return exchange

    def sent_all(self, exchange: Http2Exchange) -> bool:
        return not exchange._pending

    def reset(self, exchange: Http2Exchange, code: int) -> None:
        if self.streams.pop(exchange.stream_id, None) is None:
            return
        if exchange in self._sending:
            self._sending.remove(exchange)
        if not self.closed:
            self._reset_stream(exchange.stream_id, code)
            self._flush()
        exchange._finish(ClosedEarly(exchange.phase()))

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            reset(self.transport)

    def close(self) -> None:
        """End the connection politely (GOAWAY), or at once when it has nothing to say."""
        if self.transport is None or self.closed:
            return
        try:
            self.h2.close_connection()
            self._flush()
        except h2.exceptions.ProtocolError:
            pass
        self.transport.close()

    # -- internals --------------------------------------------------------------------------

    def _reset_stream(self, stream_id: int, code: int) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
            pass  # already closed, by the peer or by the end of its answer

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id or 0)
            size = event.flow_controlled_length or 0
            if size:
                try:
                    self.h2.acknowledge_received_data(size, event.stream_id or 0)
                except h2.exceptions.StreamClosedError:
                    pass  # the stream ended with this frame: the connection's window counts
            if stream is None:
                return
            data = event.data or b""
            if not data and not event.stream_ended:
                self._idle(stream_empty=True)
                return
            self._idle_frames = 0
            if not stream._data(data, self.limit):
                # Reading on would cost for bytes nobody wants: only this stream dies.
                self.streams.pop(stream.stream_id, None)
                if not event.stream_ended:
                    self._reset_stream(stream.stream_id, h2.errors.ErrorCodes.CANCEL)
                stream._finish(None)
        elif isinstance(event, h2.events.ResponseReceived):
            self._idle_frames = 0
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream._headers(list(event.headers or ()), interim=False)
        elif isinstance(event, h2.events.InformationalResponseReceived):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream._headers(list(event.headers or ()), interim=True)
        elif isinstance(event, h2.events.TrailersReceived):
            self._idle_frames = 0
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream._trailers(list(event.headers or ()))
        elif isinstance(event, h2.events.StreamEnded):
            self._idle_frames = 0
            stream = self.streams.pop(event.stream_id or 0, None)
            if stream is not None:
                if stream in self._sending:
                    self._sending.remove(stream)
                if stream.status:
                    stream._finish(None)
                else:
                    stream._finish(ProtocolViolation("stream ended without a response"))
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id or 0, None)
            if stream is not None:
                if stream in self._sending:
                    self._sending.remove(stream)
                code = _code_name(event.error_code)
                refused = event.error_code == _REFUSED and not stream.wire
                stream.retryable = refused
                stream._finish(StreamReset(f"stream reset by the mirror ({code})", refused=refused))
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._goaway(event)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if not self.settings_seen:
                self.settings_seen = True
                if not self.ready.done():
                    self.ready.set_result(None)
            else:
                self._idle()
        elif isinstance(event, h2.events.WindowUpdated):
            if self._sending:
                self._pump()
            else:
                self._idle()
        elif isinstance(event, h2.events.PushedStreamReceived):
            # Push is refused in our SETTINGS; h2 raises on a PUSH_PROMISE before this.
            self._idle()
        else:  # PING, PING ACK, SETTINGS ACK, PRIORITY, unknown frames, ALTSVC
            self._idle()

    def _idle(self, stream_empty: bool = False) -> None:
        self._idle_frames += 1
        if self._idle_frames > MAX_IDLE_FRAMES:
            self._fail(
                ProtocolViolation(
                    f"mirror sent more than {MAX_IDLE_FRAMES} frames without a response "
                    "(SETTINGS, PING, PRIORITY, WINDOW_UPDATE, empty DATA or unknown frames)"
                )
            )

    def _goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.going_away = True
        last = event.last_stream_id if event.last_stream_id is not None else 0
        code = _code_name(event.error_code)
        for stream_id in [s for s in self.streams if s > last]:
            stream = self.streams.pop(stream_id)
            if stream in self._sending:
                self._sending.remove(stream)
            stream.retryable = True
            stream._finish(
                StreamReset(f"mirror sent GOAWAY ({code}) before this stream", refused=True)
            )
        if event.error_code:
            # An error GOAWAY ends the streams it let through too.
            self._fail(StreamReset(f"mirror sent GOAWAY ({code})"))
        elif not self.streams:
            self.close()

    def _pump(self) -> None:
        """Send pending bodies as far as the flow-control windows allow."""
        h2c = self.h2
        for stream in list(self._sending):
            sid = stream.stream_id
            while stream._pending:
                try:
                    window = h2c.local_flow_control_window(sid)
                except h2.exceptions.ProtocolError:
                    window = 0
                size = min(window, h2c.max_outbound_frame_size, len(stream._pending))
                if size <= 0:
                    break
                chunk = stream._pending[:size]
                stream._pending = stream._pending[size:]
                h2c.send_data(sid, chunk.tobytes(), end_stream=not stream._pending)
            if not stream._pending:
                self._sending.remove(stream)

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        data = self.h2.data_to_send()
        if data:
            transport.write(data)
            if transport.get_write_buffer_size() > _MAX_UNREAD_REPLIES + self._unsent_body():
                self._fail(ProtocolViolation("mirror is not reading what is sent to it"))

    def _unsent_body(self) -> int:
        return sum(len(s._pending) for s in self._sending) + _CONNECT_WINDOW

    def _fail(self, error: BaseException) -> None:
        """End every exchange with `error` and drop the connection."""
        if self.error is None:
            self.error = error
        for stream in list(self.streams.values()):
            stream._finish(error)
        self.streams.clear()
        self._sending.clear()
        self.closed = True
        if not self.ready.done():
            self.ready.set_result(None)
        reset(self.transport)


def _code_name(code: int | None) -> str:
    try:
        return h2.errors.ErrorCodes(code or 0).name
    except ValueError:
        return f"error code {code}"


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
