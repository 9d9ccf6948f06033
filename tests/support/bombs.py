"""Decompression bombs, for the tests and scripts/soak.py: small bodies that inflate to hundreds
of MiB, in every content coding mitmproxy accepts, built by streaming compressors (a bomb's
decoded size never has to fit in memory here either). The compressors are mitmproxy's own
dependencies: brotli, and zstd from backports.zstd (mitmproxy 12) or zstandard (mitmproxy 11).
"""

from __future__ import annotations

import zlib
from typing import Any

MiB = 1 << 20
_ZEROS = b"\0" * MiB


def gzip_bomb(mib: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join(c.compress(_ZEROS) for _ in range(mib)) + c.flush()


def deflate_bomb(mib: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 15)
    return b"".join(c.compress(_ZEROS) for _ in range(mib)) + c.flush()


def brotli_bomb(mib: int) -> bytes:
    import brotli

    c = brotli.Compressor(quality=5)
    return b"".join(c.process(_ZEROS) for _ in range(mib)) + c.finish()


def zstd_bomb(mib: int) -> bytes:
    c = _zstd_compressor()
    return b"".join(c.compress(_ZEROS) for _ in range(mib)) + c.flush()


def _zstd_compressor() -> Any:
    try:
        from backports import zstd

        return zstd.ZstdCompressor()
    except ImportError:
        import zstandard

        return zstandard.ZstdCompressor().compressobj()


def stacked_bomb(mib: int) -> bytes:
    """`Content-Encoding: br, gzip`: brotli first, then gzip over it."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    return c.compress(brotli_bomb(mib)) + c.flush()


def bombs(mib: int) -> dict[str, bytes]:
    """Content-Encoding -> a body that decodes to `mib` MiB of zeros."""
    return {
        "zstd": zstd_bomb(mib),
        "gzip": gzip_bomb(mib),
        "br": brotli_bomb(mib),
        "deflate": deflate_bomb(mib),
        "br, gzip": stacked_bomb(mib),
    }
