"""Files written or read on the user's behalf, safely whatever waits at their paths.

- `replace_file`: a new file is written under a random temporary name beside its path, created
  exclusively without following a link (`O_CREAT|O_EXCL|O_NOFOLLOW`), with the permission bits
  asked for (less the umask), and renamed into place: a reader never sees half a file, and a
  link planted at the path or at a predictable temporary name is replaced, never written
  through.
- `read_regular`: a file's bytes, refused with a reason when it is not a regular file (a FIFO
  would block the reader until a writer comes) or larger than asked.
- `open_for_append`: a descriptor to append to; a regular file, or a FIFO or character device
  opened so that no write ever blocks (a FIFO without a reader is refused).

Errors are `FileRefused` (a `ValueError`: the path is not what the caller may use, the message
says why) or the `OSError` of the system call. Standard library only.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISLNK, "a symbolic link"),
)


class FileRefused(ValueError):
    """The path holds something the caller may not read or write; the message says what."""


def kind_of(mode: int) -> str:
    """`a FIFO`, `a directory`, ... for a non-regular file's st_mode; `a regular file`."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def replace_file(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to a new file and rename it to `path` (see the module docstring)."""
    parent = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(16):
        tmp = os.path.join(parent, f".{base}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(tmp, flags, mode)
        except FileExistsError:
            continue  # a name taken by someone else: draw another
        break
    else:
        raise FileExistsError(f"{parent}: no free temporary name")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_regular(path: str, max_bytes: int) -> bytes:
    """The bytes of the regular file at `path` (a link to one is followed); FileRefused when it
    is anything else or longer than `max_bytes`. Never blocks on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"{kind_of(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise FileRefused(f"{st.st_size} bytes, more than the {max_bytes} allowed")
        chunks: list[bytes] = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise FileRefused(f"more than the {max_bytes} bytes allowed")
        return b"".join(chunks)
    finally:
        os.close(fd)


def open_for_append(path: str, mode: int = 0o644) -> tuple[int, bool]:
    """(descriptor, regular) for appending to `path`, created when missing. A regular file is
    opened for blocking writes; a FIFO or character device stays non-blocking, so a write that
    would wait fails with BlockingIOError instead. FileRefused for anything else, and for a
    FIFO that no one reads."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, mode)
    except OSError as e:
        if e.errno == errno.ENXIO:  # a FIFO without a reader, opened non-blocking
            raise FileRefused("a FIFO that no process reads, not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            os.set_blocking(fd, True)
            return fd, True
        if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
            return fd, False
        raise FileRefused(f"{kind_of(st.st_mode)}, not a regular file")
    except BaseException:
        os.close(fd)
        raise
