"""Mesh configs for the end-to-end tests and scripts/soak.py (a ServiceEntry per backend, a
VirtualService mirroring to them), and a parser for the addon's `mirror summary:` line, so a
test or script can read the per-cluster counters from mitmdump's output.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def service_entry(
    name: str,
    host: str,
    port: int,
    *,
    address: str = "127.0.0.1",
    protocol: str = "HTTP",
    resolution: str = "STATIC",
) -> str:
    pname = protocol.lower()
    return f"""
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{host}]
  ports: [{{number: 80, name: {pname}, protocol: {protocol}}}]
  resolution: {resolution}
  endpoints:
  - address: {address}
    ports: {{{pname}: {port}}}
"""


def mirror_config(
    path: Path,
    primary_port: int,
    mirrors: dict[str, str],
    *,
    percentage: float | None = None,
    extra_docs: tuple[str, ...] = (),
    hosts: str = "[app.example.com]",
) -> Path:
    """primary.local -> 127.0.0.1:primary_port; `mirrors` maps a mirror host to its
    ServiceEntry document (see `service_entry`); every mirror at `percentage` (None: absent)."""
    pct = "" if percentage is None else f"\n      percentage: {{value: {percentage}}}"
    mirror_lines = "".join(f"\n    - destination: {{host: {h}}}{pct}" for h in mirrors)
    vs = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app}}
spec:
  hosts: {hosts}
  http:
  - route:
    - destination: {{host: primary.local}}
    mirrors:{mirror_lines}
"""
    docs = [service_entry("primary", "primary.local", primary_port), *mirrors.values(), *extra_docs]
    text = "\n---\n".join(d.strip() for d in [*docs, vs]) + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomic: a watcher never sees half a file
    return path


SUMMARY_RE = re.compile(r"mirror summary: (.*)$")


def last_summary_line(lines: Iterable[str]) -> str | None:
    """What follows `mirror summary: ` on the last line that has it; None when no line has it."""
    found = None
    for line in lines:
        m = SUMMARY_RE.search(line.rstrip("\n"))
        if m:
            found = m.group(1).strip()
    return found


def parse_summary(text: str) -> dict[str, dict[str, Any]]:
    """`C: sampled=3 sent=1 failed=refused:2; D: ...` (a summary line after its prefix) ->
    per-cluster counters ({"sampled": 3, "sent": 1, "failed": {"refused": 2}, ...}); failed,
    dropped and skipped are always there, empty when the line leaves them out."""
    out: dict[str, dict[str, Any]] = {}
    if text.startswith("nothing"):
        return out
    for part in text.split("; "):
        name, _, fields = part.partition(": ")
        counters: dict[str, Any] = {"failed": {}, "dropped": {}, "skipped": {}}
        for f in fields.split():
            key, eq, value = f.partition("=")
            if not eq:
                continue  # `(47.8%, configured 50%)` after sampled= is for people
            if key in ("matched", "sampled", "sent", "resent"):
                counters[key] = int(value)
            else:
                counters[key] = {
                    k: int(v) for k, _, v in (x.partition(":") for x in value.split(","))
                }
        out[name] = counters
    return out


def last_summary(lines: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The per-cluster counters of the last summary line in `lines` ({} when there is none)."""
    text = last_summary_line(lines)
    return {} if text is None else parse_summary(text)


def accounted(c: dict[str, Any]) -> int:
    """sent + failed + dropped + skipped: equals `sampled` when every copy is accounted for."""
    total = int(c.get("sent", 0))
    for key in ("failed", "dropped", "skipped"):
        total += sum(c.get(key, {}).values())
    return total
