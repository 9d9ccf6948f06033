"""The addon's request hook alone, in-process: microseconds of CPU per request.

Runs `Mirror.request` on prepared flows (mitmproxy's own test helpers, no sockets) for three
cases: a host no VirtualService claims (`nomatch`), a rule at 0% (`m0`) and a rule at 100%
(`m100`, the copy handed to a writer that answers at once, so the fan-out, the recorder and the
counters run but no socket does). Eight request headers, as a browser or wrk sends. Prints the
median over repetitions; it asserts nothing (benchmarks are scripts, not timed tests). The
whole-process figures are `scripts/bench`'s; this one isolates what the addon adds per request.

    .venv/bin/python scripts/bench_hooks.py [--requests N] [--repeat N] [--dispatch]

`--dispatch` measures instead what a whole request costs in mitmproxy's hook dispatch: the
`requestheaders`, `request`, `responseheaders` and `response` events (each followed by
mitmproxy's `update`), run through `AddonManager.handle_lifecycle` of a real mitmdump addon
chain (`DumpMaster`, no termlog, no dumper), with and without the addon; the difference is the
addon's fixed cost per request, dispatch included.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mitmproxy import hooks, options
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy.layers.http import (
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.test import taddons, tflow, tutils
from mitmproxy.tools.dump import DumpMaster

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


async def dispatch(args: argparse.Namespace, config: Path) -> None:
    """Each case's whole request as mitmproxy dispatches it to the script loader's subtree,
    which holds a `-s` script's addons: in mitmdump with the addon, and in plain mitmdump (the
    loader with no script). The rest of the chain is the same in both, so it is left out: what
    remains is the addon's cost per request, mitmproxy's walk to it included."""
    events: tuple[Callable[[Any], hooks.Hook], ...] = (
        HttpRequestHeadersHook,
        HttpRequestHook,
        HttpResponseHeadersHook,
        HttpResponseHook,
    )

    async def run(master: DumpMaster, prepared: list[Any]) -> float:
        manager = master.addons
        loader = manager.get("scriptloader")
        invoke = manager.invoke_addon
        update = hooks.UpdateHook
        response = tutils.tresp()
        t0 = time.perf_counter_ns()
        for f in prepared:
            for i, event in enumerate(events):
                if i == 2:
                    f.response = response
                await invoke(loader, event(f))
                await invoke(loader, update([f]))
        return (time.perf_counter_ns() - t0) / len(prepared) / 1e3

    # A CA of its own in a temporary confdir: mitmproxy's TLS addon needs one.
    confdir = str(config.parent)
    plain = DumpMaster(options.Options(), with_termlog=False, with_dumper=False)
    plain.options.update(confdir=confdir)
    loaded = DumpMaster(options.Options(), with_termlog=False, with_dumper=False)
    loaded.options.update(confdir=confdir)
    # Loaded as `mitmdump -s addons/mirror.py` loads it.
    loaded.options.update(scripts=[str(Path(__file__).resolve().parents[1] / "addons/mirror.py")])
    for _ in range(100):  # the script loader's watcher task loads it
        await asyncio.sleep(0.05)
        m = loaded.addons.get("mirror")
        if m is not None:
            break
    assert isinstance(m, Mirror), "addons/mirror.py did not load"
    loaded.options.update(mirror_config=[str(config)], mirror_verbosity="summary")
    m.writer = AnsweringWriter()  # type: ignore[assignment]
    batch = 200
    for case, host, path in CASES:
        diffs: list[float] = []
        plain_us: list[float] = []
        gc.collect()
        gc.disable()
        for _ in range(args.repeat * 10):
            # Small alternating batches: a pair shares whatever the machine does meanwhile.
            b = await run(plain, flows(batch, host, path))
            w = await run(loaded, flows(batch, host, path))
            plain_us.append(b)
            diffs.append(w - b)
        gc.enable()
        print(
            f"{case:8s} whole request: {statistics.median(diffs):5.1f} us for the addon, "
            f"dispatch included (plain mitmdump's walk to the script loader: "
            f"{statistics.median(plain_us):.1f} us; median of {len(diffs)} pairs of "
            f"{batch} requests)"
        )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=4000, help="flows per repetition (4000)")
    p.add_argument("--repeat", type=int, default=5, help="repetitions per case (5)")
    p.add_argument(
        "--dispatch", action="store_true", help="whole requests through a real addon chain"
    )
    args = p.parse_args(argv)
    config = Path(tempfile.mkdtemp()) / "config.yaml"
    config.write_text(CONFIG)
    if args.dispatch:
        asyncio.run(dispatch(args, config))
        return 0
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
