"""Response bodies decoded for a comparison, never past a limit.

A mirror under test may answer with a decompression bomb (16 kB of zstd that inflates to
512 MiB), so a body is decoded the way a production proxy decodes one: with streaming
decompressors that stop once `limit` bytes came out, for every content coding mitmproxy
accepts (gzip, deflate, br, zstd, identity) and for stacked codings (`Content-Encoding: br,
gzip`: decoded last coding first). Each coding's output is bounded by `limit`, so the work and
the memory of one decode are bounded too; zstd frames may not ask for a window over 8 MiB
(RFC 9659's limit for HTTP). Nothing here goes through mitmproxy's shared decode cache.

The decompressors come from mitmproxy's own dependencies: zlib, `brotli` (with an output limit
from Brotli 1.2 on; older versions are fed the input in small slices), and zstd from
`compression.zstd` (Python 3.14), `backports.zstd` (mitmproxy 12) or `zstandard` (mitmproxy 11).
"""

from __future__ import annotations

import importlib
import io
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

MAX_CODINGS = 4  # stacked content codings decoded at most; more is an error
_ZSTD_WINDOW_LOG_MAX = 23  # 8 MiB: RFC 9659 3.2
_ZSTD_MAX_FRAMES = 1024
# Brotli without an output limit (Brotli < 1.2) gets its input this many bytes at a time: one
# slice cannot hold much more than one meta-block (at most 16 MiB of output).
_BROTLI_SLICE = 16


class Decoded(NamedTuple):
    """A body as the comparison sees it. `body`: the decoded bytes, at most the limit (None when
    it could not be decoded: `error` says why); `over`: decoding stopped at the limit, the body
    is longer."""

    body: bytes | None
    over: bool = False
    error: str = ""


class DecodeError(ValueError):
    """A body that is not what its Content-Encoding says."""


def decode_body(data: bytes, content_encoding: str, limit: int) -> Decoded:
    """`data` decoded as `content_encoding` says, at most `limit` bytes of it (see the module
    docstring). A prefix of an encoded body decodes to a prefix of the decoded one."""
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    codings = [c for c in codings if c and c not in ("identity", "none")]
    if len(codings) > MAX_CODINGS:
        return Decoded(None, error=f"more than {MAX_CODINGS} content codings")
    body = data
    for coding in reversed(codings):
        decoder = _DECODERS.get(coding)
        if decoder is None:
            return Decoded(None, error=f"unsupported content coding {coding!r}")
        try:
            body = decoder(body, limit)
        except (DecodeError, zlib.error, EOFError, OSError, ValueError) as e:
            return Decoded(None, error=f"cannot decode {coding}: {e}")
        except Exception as e:  # brotli.error, zstandard.ZstdError: their own classes
            return Decoded(None, error=f"cannot decode {coding}: {type(e).__name__}: {e}")
        if len(body) > limit:
            return Decoded(body[:limit], over=True)
    if len(body) > limit:
        return Decoded(body[:limit], over=True)
    return Decoded(body)


def _zlib(data: bytes, limit: int, wbits: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out = bytearray()
    pending = data
    while len(out) <= limit:
        out += d.decompress(pending, limit + 1 - len(out))
        pending = d.unconsumed_tail
        if not pending or d.eof:
            break
    if len(out) <= limit and not d.eof:
        out += d.flush(limit + 1 - len(out))
    return bytes(out)


def _gzip(data: bytes, limit: int) -> bytes:
    # 32 + 15: a gzip or a zlib header, as mitmproxy decodes gzip.
    return _zlib(data, limit, 47)


def _deflate(data: bytes, limit: int) -> bytes:
    # RFC 9110's deflate is zlib-wrapped; some servers send raw deflate (mitmproxy takes both).
    try:
        return _zlib(data, limit, 15)
    except zlib.error:
        return _zlib(data, limit, -15)


def _brotli(data: bytes, limit: int) -> bytes:
    brotli = _module("brotli")
    d = brotli.Decompressor()
    out = bytearray()
    if hasattr(d, "can_accept_more_data"):  # Brotli >= 1.2: process() takes an output limit
        out += d.process(data, output_buffer_limit=limit + 1)
        while len(out) <= limit and not d.is_finished() and not d.can_accept_more_data():
            out += d.process(b"", output_buffer_limit=limit + 1 - len(out))
        return bytes(out)
    for pos in range(0, len(data), _BROTLI_SLICE):
        out += d.process(data[pos : pos + _BROTLI_SLICE])
        if len(out) > limit or d.is_finished():
            break
    return bytes(out)


def _zstd(data: bytes, limit: int) -> bytes:
    zstd = _zstd_module()
    if zstd is None:
        zstandard = _module("zstandard")
        return _zstandard(zstandard, data, limit)
    out = bytearray()
    pending = data
    options = {zstd.DecompressionParameter.window_log_max: _ZSTD_WINDOW_LOG_MAX}
    for _ in range(_ZSTD_MAX_FRAMES):
        d = zstd.ZstdDecompressor(options=options)
        out += d.decompress(pending, max_length=limit + 1 - len(out))
        while len(out) <= limit and not d.eof and not d.needs_input:
            out += d.decompress(b"", max_length=limit + 1 - len(out))
        if len(out) > limit or not d.eof:
            return bytes(out)
        pending = d.unused_data
        if not pending:
            return bytes(out)
    raise DecodeError(f"more than {_ZSTD_MAX_FRAMES} zstd frames")


def _zstandard(zstandard: Any, data: bytes, limit: int) -> bytes:
    d = zstandard.ZstdDecompressor(max_window_size=1 << _ZSTD_WINDOW_LOG_MAX)
    out = bytearray()
    with d.stream_reader(io.BytesIO(data), read_across_frames=True) as reader:
        while len(out) <= limit:
            chunk = reader.read(limit + 1 - len(out))
            if not chunk:
                break
            out += chunk
    return bytes(out)


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise DecodeError(f"no {name} module to decode it with") from None


def _zstd_module() -> Any:
    """The stdlib-shaped zstd module (compression.zstd, backports.zstd), or None."""
    for name in ("compression.zstd", "backports.zstd"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


_DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": _gzip,
    "x-gzip": _gzip,
    "deflate": _deflate,
    "deflateraw": _deflate,
    "br": _brotli,
    "zstd": _zstd,
}
