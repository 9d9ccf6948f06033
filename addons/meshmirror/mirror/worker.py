"""The mirror sender process: a MirrorWriter on its own event loop, fed by the proxy over a pipe.

`python -m meshmirror.mirror.worker '{"timeout": 5.0}'` is started by
sender.ProcessWriter. It reads copies on stdin, sends them with MirrorWriter, and writes
each copy's MirrorResult on stdout. It stops when stdin closes (the proxy exited, however it
exited): copies still in flight are cancelled and reported, then the process ends.

Wire format, both ways: frames of a 4-byte big-endian length and a pickle of a list of messages.
Pickle is safe here: both ends are this package, over private pipes between parent and child.
Messages are plain tuples (`endpoint_message`, `copy_message`, `result_message`): pickling the
dataclasses themselves cost several times more per copy on the proxy's side.
Proxy -> sender: ("endpoint", id, *MirrorEndpoint fields), once per endpoint before the first
copy to it; ("copy", token, pool_key, endpoint id, method, target, headers, body, capture);
("forget",), which drops the endpoint table; ("cancel",).
Sender -> proxy: (token, *MirrorResult fields).

Only the standard library and the writer's modules are imported: the process starts in about a
tenth of a second and holds a few MB.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import struct
import sys
from typing import Any

from meshmirror.mirror.types import MirrorEndpoint, MirrorRequest, MirrorResult
from meshmirror.mirror.writer import MirrorWriter

_LENGTH = struct.Struct(">I")


def endpoint_message(endpoint_id: int, e: MirrorEndpoint) -> tuple[Any, ...]:
    return (
        "endpoint",
        endpoint_id,
        e.host,
        e.port,
        e.tls,
        e.sni,
        e.ca_file,
        e.insecure_skip_verify,
        e.alpn,
        e.ca_path,
        e.client_cert,
    )


def copy_message(
    token: int, pool_key: str, endpoint_id: int, request: MirrorRequest, capture: int
) -> tuple[Any, ...]:
    return (
        "copy",
        token,
        pool_key,
        endpoint_id,
        request.method,
        request.target,
        request.headers,
        request.body,
        capture,
    )


def result_message(token: int, r: MirrorResult) -> tuple[Any, ...]:
    return (
        token,
        r.status,
        r.failure,
        r.detail,
        r.latency,
        r.bytes_sent,
        r.bytes_received,
        r.headers,
        r.body,
        r.body_truncated,
        r.resent,
        r.times,
        r.grpc_status,
        r.trailers,
    )


def encode_frame(messages: list[Any]) -> bytes:
    data = pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


class FrameReader:
    """Reassembles frames from a byte stream; a trailing partial frame waits for more bytes."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buf
        buf += data
        out: list[Any] = []
        pos = 0
        size = len(buf)
        while size - pos >= 4:
            (length,) = _LENGTH.unpack_from(buf, pos)
            end = pos + 4 + length
            if end > size:
                break
            out.extend(pickle.loads(buf[pos + 4 : end]))
            pos = end
        if pos:
            del buf[:pos]
        return out


class _Worker:
    def __init__(self, loop: asyncio.AbstractEventLoop, writer: MirrorWriter) -> None:
        self.loop = loop
        self.writer = writer
        self.out: asyncio.WriteTransport | None = None
        self.stopped = loop.create_future()
        self._results: list[tuple[Any, ...]] = []
        self._flush_scheduled = False
        self._frames = FrameReader()
        # Endpoint id -> the one MirrorEndpoint the writer's pools are keyed by.
        self._endpoints: dict[int, MirrorEndpoint] = {}

    def feed(self, data: bytes) -> None:
        for message in self._frames.feed(data):
            kind = message[0]
            if kind == "copy":
                _, token, pool_key, endpoint_id, method, target, headers, body, capture = message
                endpoint = self._endpoints[endpoint_id]
                request = MirrorRequest(method, target, headers, body)
                # Uncapped here: the proxy counted this copy against mirror_max_inflight.
                self.writer.submit(pool_key, endpoint, request, self._reply(token), capture)
            elif kind == "endpoint":
                self._endpoints[message[1]] = MirrorEndpoint(*message[2:])
            elif kind == "forget":
                self._endpoints.clear()
            elif kind == "own":
                self.writer.set_own_addresses(message[1])
            elif kind == "cancel":
                self.loop.create_task(self.writer.drain(0.0))

    def _reply(self, token: int) -> Any:
        return lambda result: self._post(token, result)

    def _post(self, token: int, result: MirrorResult) -> None:
        self._results.append(result_message(token, result))
        if not self._flush_scheduled:
            # One frame per loop iteration, however many copies finished in it.
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        results, self._results = self._results, []
        if results and self.out is not None and not self.out.is_closing():
            self.out.write(encode_frame(results))

    def stop(self) -> None:
        if self.stopped.done():
            return
        self.writer.close()  # every copy in flight gets its "cancelled" result now
        self._flush()
        self.stopped.set_result(None)


class _Input(asyncio.Protocol):
    def __init__(self, worker: _Worker) -> None:
        self.worker = worker

    def data_received(self, data: bytes) -> None:
        self.worker.feed(data)

    def eof_received(self) -> bool:
        self.worker.stop()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.stop()


class _Output(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.closed = loop.create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _serve(params: dict[str, Any], out_fd: int) -> None:
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):
        # As mitmproxy 12 does on its own loop: a copy runs up to its first await at once.
        loop.set_task_factory(asyncio.eager_task_factory)
    writer = MirrorWriter(
        timeout=float(params["timeout"]),
        max_inflight=None,
        connect_timeout=params.get("connect_timeout"),
        max_idle_per_endpoint=int(params.get("max_idle_per_endpoint", 16)),
        max_response_body=int(params.get("max_response_body", 8 * 1024 * 1024)),
        timeline=bool(params.get("timeline", False)),
    )
    worker = _Worker(loop, writer)
    out_pipe = os.fdopen(out_fd, "wb", buffering=0)
    out_transport, output = await loop.connect_write_pipe(lambda: _Output(loop), out_pipe)
    worker.out = out_transport
    in_pipe = os.fdopen(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
    await loop.connect_read_pipe(lambda: _Input(worker), in_pipe)
    await worker.stopped
    out_transport.close()  # flushes what is buffered first
    try:
        async with asyncio.timeout(2.0):
            await output.closed
    except TimeoutError:
        pass


def main(argv: list[str]) -> int:
    params = json.loads(argv[0]) if argv else {"timeout": 5.0}
    # Frames go to a private copy of stdout; anything printed by accident goes to stderr
    # instead of corrupting them.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    asyncio.run(_serve(params, out_fd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
