"""The addon's request hook alone, in-process: microseconds of CPU per request.

Runs `Mirror.request` on prepared flows (mitmproxy's own test helpers, no sockets) for three
cases: a host no VirtualService claims (`nomatch`), a rule at 0% (`m0`) and a rule at 100%
(`m100`, the copy handed to a writer that answers at once, so the fan-out, the recorder and the
counters run but no socket does). Eight request headers, as a browser or wrk sends. Prints the
median over repetitions; it asserts nothing (benchmarks are scripts, not timed tests). The
whole-process figures are `scripts/bench`'s; this one isolates what the addon adds per request.

    .venv/bin/python scripts/bench_hooks.py [--requests N] [--repeat N]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons, tflow, tutils

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "addons"))

from meshmirror.mirror.types import MirrorEndpoint, MirrorRequest, MirrorResult  # noqa: E402
from meshmirror.mitm.addon import Mirror  # noqa: E402

CONFIG = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: primary}
spec:
  hosts: [primary.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.2, ports: {http: 8081}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shadow}
spec:
  hosts: [shadow.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.3, ports: {http: 9091}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: [app.example.com]
  http:
  - match: [{uri: {prefix: /none}}]
    route: [{destination: {host: primary.local}}]
    mirror: {host: shadow.local}
    mirrorPercentage: {value: 0}
  - route: [{destination: {host: primary.local}}]
    mirror: {host: shadow.local}
"""
HEADERS = [
    (b"host", b""),
    (b"user-agent", b"wrk/4.1"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip"),
    (b"x-forwarded-proto", b"http"),
    (b"cookie", b"a=b"),
    (b"x-b3-traceid", b"463ac35c9f6413ad"),
    (b"content-type", b"text/plain"),
]
CASES = (
    ("nomatch", b"other.example.com", "/x"),
    ("m0", b"app.example.com", "/none"),
    ("m100", b"app.example.com", "/headers"),
)
_ANSWER = MirrorResult(200, None, "", 0.001, 100, 200)


class AnsweringWriter:
    """A CopyWriter that answers every copy at once: the copy's bookkeeping runs, no socket."""

    def submit(
        self,
        pool_key: str,
        endpoint: MirrorEndpoint,
        request: MirrorRequest,
        on_done: Callable[[MirrorResult], None],
        capture: int = 0,
    ) -> bool:
        on_done(_ANSWER)
        return True

    def inflight(self, pool_key: str | None = None) -> int:
        return 0

    def set_own_addresses(self, addresses: list[tuple[str, int]]) -> None:
        pass

    def close(self) -> None:
        pass

    async def drain(self, timeout: float) -> int:
        return 0


def flows(n: int, host: bytes, path: str) -> list[Any]:
    out = []
    for _ in range(n):
        headers = [(k, host if k == b"host" else v) for k, v in HEADERS]
        req = tutils.treq(host="127.0.0.1", port=8080, path=path, content=b"", headers=headers)
        out.append(tflow.tflow(req=req))
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=4000, help="flows per repetition (4000)")
    p.add_argument("--repeat", type=int, default=5, help="repetitions per case (5)")
    args = p.parse_args(argv)
    config = Path(tempfile.mkdtemp()) / "config.yaml"
    config.write_text(CONFIG)
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_config=[str(config)], mirror_verbosity="summary")
        m.writer = AnsweringWriter()  # type: ignore[assignment]
        for case, host, path in CASES:
            per_request: list[float] = []
            for _ in range(args.repeat):
                prepared = flows(args.requests, host, path)
                gc.collect()
                gc.disable()
                t0 = time.process_time()
                for f in prepared:
                    m.request(f)
                spent = time.process_time() - t0
                gc.enable()
                per_request.append(spent / len(prepared) * 1e6)
            print(
                f"{case:8s} median {statistics.median(per_request):6.1f} us/request "
                f"(min {min(per_request):.1f}, max {max(per_request):.1f}; "
                f"{args.repeat} x {args.requests})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
