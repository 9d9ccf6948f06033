"""Readings from /proc (Linux): a process's CPU time, memory, open descriptors and listening
ports, summed over its descendants where that matters, and the machine's busy CPU time.

Contract: every reader raises OSError (or ValueError) when the process is gone; the `tree_`
readers skip descendants that exit while they are being read.
"""

from __future__ import annotations

import contextlib
import os

CLK_TCK = os.sysconf("SC_CLK_TCK")
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # The command name (field 2) may contain spaces and parentheses: split after its last ")".
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_tree(pid: int) -> list[int]:
    """pid and its live descendants (meshmirror's mirror sender process is a child)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of the proxy and its children: the copies' cost counts wherever it runs."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, ValueError):
            total += cpu_seconds(p)
    return total


def memory_mb(pid: int) -> dict[str, float]:
    """{"VmRSS": MB, "VmHWM": MB} of pid (VmHWM: the peak resident set)."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024
    return out


def tree_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM summed over the proxy and its children (the sum of peaks is an upper
    bound of the peak of the sum)."""
    out = {"VmRSS": 0.0, "VmHWM": 0.0}
    for p in process_tree(pid):
        with contextlib.suppress(OSError, ValueError):
            for key, value in memory_mb(p).items():
                out[key] += value
    return out


def fds_and_rss(pid: int) -> tuple[int, int]:
    """(open fds, VmRSS in KiB) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return fds, rss


def busy_seconds() -> float:
    """CPU seconds spent busy on all CPUs since boot (/proc/stat), for the noise figure."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:9]]
    return (sum(vals) - vals[3] - vals[4]) / CLK_TCK


def listening_ports(pid: int) -> set[int]:
    """TCP ports pid itself listens on (its own descriptors, not its children's).

    This is how a program started with port 0 is asked which port it got when it does not print
    it (mitmdump at termlog_verbosity=warn) or prints the configured 0 (mitmweb's web_port).
    """
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/net/{table}") as f:
            next(f)  # the header line
            for line in f:
                cols = line.split()
                if cols[3] == LISTEN and cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


# /proc/net/tcp's `st` column (include/net/tcp_states.h).
TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


def tcp_states_to(port: int) -> dict[str, int]:
    """How many of this machine's TCP sockets connected to `port` (their remote port) are in
    each state, orphans the kernel keeps for closed sockets included (they belong to no
    process, so only /proc/net/tcp shows them)."""
    counts: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if int(remote.rsplit(":", 1)[1], 16) == port:
                name = TCP_STATES.get(state, state)
                counts[name] = counts.get(name, 0) + 1
    return counts
