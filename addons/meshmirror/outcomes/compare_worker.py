"""The comparison process: `python -m meshmirror.outcomes.compare_worker`, started by
outcomes/comparer.py. It reads jobs on stdin, runs each (outcomes/compare_job.py) and writes
its result on stdout, one at a time; it ends when stdin closes (the proxy stopped, however it
stopped).

Wire format, both ways: frames of a 4-byte big-endian length and a pickle of one message.
Pickle is safe here: both ends are this package, over private pipes between parent and child.
Proxy -> worker: (token, CompareJob). Worker -> proxy: (token, Comparison).

It runs at the lowest priority (nice 19), and after each costly comparison it rests three
times as long as it took (`REST`): comparisons are background work, at most a quarter of one
core, and on a busy machine the proxy's requests go first. It ignores SIGINT: a terminal's
Ctrl-C is for the proxy, which then stops it by closing its stdin. Only the standard library,
the comparison's modules and the decompressors are imported.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import time

from meshmirror.outcomes.compare_job import run_job

LENGTH = struct.Struct(">I")
NICE = 19
# After a comparison that took t seconds, the process rests REST * t before the next one, so
# comparisons take at most 1 / (1 + REST) of one core however costly a candidate makes them
# (a costly one is about 0.35 s within its budget). The cheap ones (most) do not rest.
REST = 3.0
REST_FROM = 0.01  # seconds a comparison takes before its process rests after it


def encode(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return LENGTH.pack(len(data)) + data


def _read_exact(fd: int, n: int) -> bytes:
    """n bytes from fd, or fewer when it ends first."""
    chunks: list[bytes] = []
    left = n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def serve(in_fd: int, out_fd: int) -> int:
    while True:
        head = _read_exact(in_fd, LENGTH.size)
        if len(head) < LENGTH.size:
            return 0
        (size,) = LENGTH.unpack(head)
        data = _read_exact(in_fd, size)
        if len(data) < size:
            return 0
        token, job = pickle.loads(data)
        started = time.perf_counter()
        result = run_job(job)
        spent = time.perf_counter() - started
        _write_all(out_fd, encode((token, result)))
        if spent >= REST_FROM:
            time.sleep(REST * spent)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(NICE)
    except OSError:
        pass
    # Frames go to a private copy of stdout; anything printed by accident goes to stderr
    # instead of corrupting them.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        return serve(sys.stdin.fileno(), out_fd)
    except BrokenPipeError:  # the proxy is gone
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
