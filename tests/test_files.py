"""files.py: exclusive temporary files renamed into place, and no read or open that a FIFO can
block."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from meshmirror.files import FileRefused, open_for_append, read_regular, replace_file


def test_replace_file_writes_through_no_link_and_leaves_nothing_behind(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "out.json"
    (tmp_path / "out.json.tmp").symlink_to(victim)  # the old predictable name
    path.symlink_to(victim)
    replace_file(str(path), b"new", mode=0o600)
    assert victim.read_text() == "precious"
    assert not path.is_symlink() and path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.json.tmp", "victim"]


def test_replace_file_removes_its_temporary_file_when_the_rename_fails(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x").write_text("keeps the directory non-empty")
    with pytest.raises(OSError):
        replace_file(str(tmp_path / "dir"), b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]


def test_read_regular_refuses_a_fifo_a_directory_and_a_file_too_large(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FileRefused, match="a FIFO, not a regular file"):
        read_regular(str(fifo), 100)
    with pytest.raises(FileRefused, match="a directory"):
        read_regular(str(tmp_path), 100)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    with pytest.raises(FileRefused, match="more than the 100"):
        read_regular(str(big), 100)
    assert read_regular(str(big), 101) == b"x" * 101


def test_open_for_append_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FileRefused, match="FIFO that no process reads"):
        open_for_append(str(fifo))
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        fd, regular = open_for_append(str(fifo))
        try:
            assert not regular and not os.get_blocking(fd)
            with pytest.raises(BlockingIOError):
                while True:  # fills the pipe: a full FIFO fails the write, never waits
                    os.write(fd, b"x" * 65536)
        finally:
            os.close(fd)
    finally:
        os.close(reader)
    fd, regular = open_for_append(str(tmp_path / "log"))
    os.close(fd)
    assert regular


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
