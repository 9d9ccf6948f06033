"""Routing micro-benchmark: compile 10,000 rules over 1,000 hosts, then time matching.

Prints figures; it asserts nothing (benchmarks are scripts, not timed tests). Targets from the
design: compile < 2 s, median match < 20 us.

    .venv/bin/python scripts/bench_routing.py [--hosts N] [--rules-per-host N] [--requests N]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time

from meshmirror.config.destinations import ServiceEntry
from meshmirror.config.resources import LoadedResource
from meshmirror.config.virtualservice import VirtualService
from meshmirror.diagnostics import Source
from meshmirror.routing.compile import compile_route_table
from meshmirror.routing.match import match_request
from meshmirror.routing.request_view import RequestView


def build_resources(hosts: int, rules_per_host: int) -> list[LoadedResource]:
    """One ServiceEntry and one VirtualService per host; rules mix every matcher kind so the
    benchmark exercises prefix, exact, regex, header and query conditions."""
    out: list[LoadedResource] = []
    for h in range(hosts):
        host = f"svc-{h}.bench.example"
        se = ServiceEntry.model_validate(
            {
                "apiVersion": "networking.istio.io/v1beta1",
                "kind": "ServiceEntry",
                "metadata": {"name": f"se-{h}"},
                "spec": {
                    "hosts": [host, f"shadow-{h}.bench.example"],
                    "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                    "resolution": "STATIC",
                    "endpoints": [{"address": "127.0.0.1", "ports": {"http": 20000 + h}}],
                },
            }
        )
        http = []
        for i in range(rules_per_host - 1):
            kind = i % 5
            match: dict[str, object]
            if kind == 0:
                match = {"uri": {"prefix": f"/api/v{i}/"}}
            elif kind == 1:
                match = {"uri": {"exact": f"/exact/{i}"}, "method": {"exact": "POST"}}
            elif kind == 2:
                match = {"uri": {"regex": f"/items/{i}/[0-9]+"}}
            elif kind == 3:
                match = {"uri": {"prefix": "/h"}, "headers": {"x-tenant": {"exact": f"t{i}"}}}
            else:
                match = {"uri": {"prefix": "/q"}, "queryParams": {"v": {"exact": str(i)}}}
            http.append(
                {
                    "match": [match],
                    "route": [{"destination": {"host": host}}],
                    "mirror": {"host": f"shadow-{h}.bench.example"},
                    "mirrorPercentage": {"value": 10.0},
                }
            )
        http.append({"route": [{"destination": {"host": host}}]})  # catch-all last
        vs = VirtualService.model_validate(
            {
                "apiVersion": "networking.istio.io/v1beta1",
                "kind": "VirtualService",
                "metadata": {"name": f"vs-{h}"},
                "spec": {"hosts": [host], "http": http},
            }
        )
        out.append(LoadedResource(obj=se, source=Source("bench", 2 * h + 1)))
        out.append(LoadedResource(obj=vs, source=Source("bench", 2 * h + 2)))
    return out


def make_requests(hosts: int, rules_per_host: int, n: int, seed: int) -> list[RequestView]:
    rng = random.Random(seed)
    out: list[RequestView] = []
    for _ in range(n):
        h = rng.randrange(hosts)
        i = rng.randrange(rules_per_host)
        kind = i % 5
        method = "GET"
        headers = [("host", f"svc-{h}.bench.example"), ("user-agent", "bench")]
        if kind == 0:
            path = f"/api/v{i}/users?page=2"
        elif kind == 1:
            path, method = f"/exact/{i}", "POST"
        elif kind == 2:
            path = f"/items/{i}/12345"
        elif kind == 3:
            path = "/headers"
            headers.append(("x-tenant", f"t{i}"))
        else:
            path = f"/query?v={i}&x=1"
        if i == rules_per_host - 1:
            path = "/unmatched/falls/to/catch-all"
        out.append(
            RequestView.build(method, "http", f"svc-{h}.bench.example:80", path, headers, 80)
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--rules-per-host", type=int, default=10)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    t0 = time.perf_counter()
    resources = build_resources(args.hosts, args.rules_per_host)
    t1 = time.perf_counter()
    table, diags = compile_route_table(resources)
    t2 = time.perf_counter()
    assert table is not None, [d.format() for d in diags]
    routes = sum(len(vh.routes) for vh in table.virtual_hosts)
    print(f"models:   {len(resources)} resources built in {t1 - t0:.2f} s (pydantic, not timed)")
    print(
        f"compile:  {routes} routes, {len(table.virtual_hosts)} virtual hosts in "
        f"{t2 - t1:.3f} s ({(t2 - t1) / max(routes, 1) * 1e6:.1f} us/route)"
    )

    requests = make_requests(args.hosts, args.rules_per_host, args.requests, args.seed)
    # Fresh views per timing run: RequestView caches derived fields (path without query, ...)
    # on first use, and a real request is matched once.
    for r in requests[:1000]:
        match_request(table, r)  # warm-up
    requests = make_requests(args.hosts, args.rules_per_host, args.requests, args.seed)
    gc.disable()
    samples: list[float] = []
    misses = 0
    clock = time.perf_counter_ns
    for r in requests:
        s = clock()
        found = match_request(table, r)
        samples.append((clock() - s) / 1000)
        misses += found is None
    gc.enable()
    samples.sort()
    p99 = samples[int(len(samples) * 0.99) - 1]
    print(
        f"match:    {len(samples)} requests: median {statistics.median(samples):.2f} us, "
        f"p99 {p99:.2f} us, max {samples[-1]:.1f} us, unmatched {misses}"
    )
    # One machine-readable line for scripts/bench.py.
    print(
        json.dumps(
            {
                "routes": routes,
                "virtual_hosts": len(table.virtual_hosts),
                "compile_s": round(t2 - t1, 4),
                "median_match_us": round(statistics.median(samples), 3),
                "p99_match_us": round(p99, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
