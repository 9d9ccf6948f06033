"""Side-by-side performance benchmark of meshmirror, on 127.0.0.1 only: the orchestrator.

Measures, in one run and interleaved (round-robin over the points, repeated rounds, so drift hits
all alike): plain `mitmdump --mode reverse:` (the baseline); meshmirror with no matching route, 0%,
50% and 100% to a healthy mirror; 100% to a mirror that answers after 2 s, to one that accepts and
never answers, and to a closed port; nginx with and without its `mirror` directive (healthy and
2 s mirror) and Envoy on `meshmirror envoy`'s export of the 0% and 100% configs, as the peers;
and gRPC unary calls over h2c: plain mitmdump with meshmirror's HTTP/2 edges only, meshmirror at
0% and 100% with copies to a second gRPC server. Each point gets a closed-loop keep-alive run
(wrk or the built-in asyncio client; h2load for gRPC) for throughput and an open-loop fixed-rate
run at about half its baseline's capacity for latency (the built-in client; grpcio for gRPC).
Figures per point: requests/s, p50/p99/max latency, errors, mirror delivered/sampled and the
addon's outcome counters, proxy CPU per request and peak RSS, ratios to the baseline; the
targets are checked beside them.

Process layout: this orchestrator; two backend processes (`bench.py _serve`: the primary; the
mirrors), two more for gRPC points (`bench.py _serve_grpc`); the proxy under test (mitmdump,
nginx or Envoy); the load generator (wrk or `bench.py _load`; h2load or `bench.py _grpc_load`).
The parts live in scripts/benchlib (see its docstring); the helpers the tests share (processes,
ports, /proc readings, the gRPC servers, Envoy's export) in tests/support. wrk, nginx and h2load
are used when present and installed only with `--install` (scripts/setup installs h2load).

Run it through `scripts/bench` (which runs scripts/setup first); `--help` lists the knobs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# tests/support (processes, ports, /proc) is imported as `tests.support`; benchlib sits beside
# this file, which puts scripts/ on sys.path when it runs.
sys.path.insert(0, str(ROOT))

from benchlib.backends import serve_main, start_backends  # noqa: E402
from benchlib.common import BenchError, Stop, log  # noqa: E402
from benchlib.envoy_proxy import find_envoy  # noqa: E402
from benchlib.figures import aggregate  # noqa: E402
from benchlib.grpc_backends import serve_grpc_main, start_grpc_backends  # noqa: E402
from benchlib.grpcload import grpc_load_main  # noqa: E402
from benchlib.loadgen import load_main  # noqa: E402
from benchlib.measure import Env, Settings, measure, soak  # noqa: E402
from benchlib.points import POINT_NAMES, POINTS, Point  # noqa: E402
from benchlib.procs import Children  # noqa: E402
from benchlib.profile import find_pyspy  # noqa: E402
from benchlib.render import print_report, svg_chart  # noqa: E402
from benchlib.routing import run_routing_bench  # noqa: E402
from benchlib.targets import targets  # noqa: E402
from benchlib.tools import addon_importable, find_tools, machine_info, usable  # noqa: E402


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="meshmirror's side-by-side benchmark: plain mitmdump, meshmirror at "
        "0/50/100%%, slow, silent and refusing mirrors, nginx's mirror and Envoy (on meshmirror "
        "envoy's export) as the peers, gRPC over h2c (plain mitmdump vs meshmirror at 0 and "
        "100%%). Prints a Markdown table (stdout), writes a JSON file and optionally an SVG "
        "chart.",
    )
    p.add_argument("--quick", action="store_true", help="seconds per point, 1 round (CI smoke)")
    p.add_argument(
        "--points",
        default="all",
        help=f"comma-separated subset of: {', '.join(POINT_NAMES)} (default all)",
    )
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 1)")
    p.add_argument("--duration", type=float, help="closed-loop seconds per point (default 4)")
    p.add_argument("--open-duration", type=float, help="fixed-rate seconds per point (default 4)")
    p.add_argument("--connections", type=int, default=8, help="closed-loop connections (8)")
    p.add_argument(
        "--rate",
        type=float,
        help="fixed rate req/s, gRPC points too (default: half the first closed loop's of the "
        "protocol: the baseline's, grpc-baseline's)",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="client timeout per request (5 s)")
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument(
        "--install",
        action="store_true",
        help="apt-get install nginx/wrk/h2load when missing (root); without it nothing is "
        "installed",
    )
    p.add_argument(
        "--envoy-concurrency",
        type=int,
        default=1,
        help="Envoy's --concurrency (worker threads) at the Envoy points (default 1: per core, "
        "as one mitmproxy process)",
    )
    p.add_argument("--no-install", action="store_true", help="the default; kept for old scripts")
    p.add_argument("--soak", type=float, help="seconds of full load on --soak-point (default 60)")
    p.add_argument("--soak-point", default="silent100", choices=POINT_NAMES)
    p.add_argument(
        "--termlog-verbosity",
        default="warn",
        help="mitmdump's termlog_verbosity (warn: logging cost not measured)",
    )
    p.add_argument("--no-routing", action="store_true", help="skip scripts/bench_routing.py")
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample the proxy with py-spy (when on PATH) during each closed-loop run and "
        "print the top of the profile per point; sampling slows the proxy a little",
    )
    p.add_argument(
        "--timeline",
        action="store_true",
        help="record the proxy's per-request timeline (mirror_timeline) at every mitmdump "
        "point and print where the time went; it costs time per request, so its throughput "
        "and latency figures are not the targets'",
    )
    p.add_argument("--out", type=Path, help="JSON path (default bench-results/bench-<ts>.json)")
    p.add_argument("--svg", type=Path, help="also write an SVG chart here")
    p.add_argument("--keep-tmp", action="store_true", help="keep configs and logs (path printed)")
    args = p.parse_args(argv)
    if args.install and args.no_install:
        p.error("--install and --no-install contradict each other")
    if args.envoy_concurrency < 1:
        p.error("--envoy-concurrency must be at least 1")
    if args.points == "all":
        args.points = POINT_NAMES
    else:
        args.points = [x.strip() for x in args.points.split(",") if x.strip()]
        bad = [x for x in args.points if x not in POINT_NAMES]
        if bad:
            p.error(f"unknown point(s) {', '.join(bad)}; choose from {', '.join(POINT_NAMES)}")
    return args


@contextlib.contextmanager
def sigterm_stops() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Stop()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def configure(args: argparse.Namespace, points: list[Point]) -> tuple[Settings, dict[str, str]]:
    """The run's settings (tools found, defaults for --quick) and the points that cannot run,
    with the reason."""
    q = args.quick
    need: dict[str, str] = {}
    if any(p.proxy == "nginx" for p in points):
        need["nginx"] = "nginx-light|nginx"
    if args.loadgen in ("auto", "wrk"):
        need["wrk"] = "wrk"
    if any(p.grpc for p in points):
        need["h2load"] = "nghttp2-client"
    tools = find_tools(need, install=args.install)
    wrk = tools.get("wrk", "not run: --loadgen python")
    nginx = tools.get("nginx", "not run: no nginx point selected")
    h2load = tools.get("h2load", "not run: no gRPC point selected")
    envoy = "not run: no Envoy point selected"
    if any(p.proxy == "envoy" for p in points):
        envoy = find_envoy()
    if args.loadgen == "wrk" and not usable(wrk):
        log(f"wrk unavailable ({wrk}); using the built-in asyncio client")
    settings = Settings(
        rounds=args.rounds or (1 if q else 3),
        duration=args.duration or (1.0 if q else 4.0),
        open_duration=args.open_duration or (1.0 if q else 4.0),
        warmup=0.3 if q else 1.0,
        connections=args.connections,
        rate=args.rate,
        timeout=args.timeout,
        max_open_conns=256,
        loadgen="wrk" if usable(wrk) and args.loadgen != "python" else "python",
        wrk=wrk,
        nginx=nginx,
        h2load=h2load,
        envoy=envoy,
        envoy_concurrency=args.envoy_concurrency,
        termlog=args.termlog_verbosity,
        soak=args.soak if args.soak is not None else (0.0 if q else 60.0),
        soak_point=args.soak_point,
        quick=q,
        timeline=args.timeline,
        pyspy=(find_pyspy() or "not run: py-spy is not on PATH (pip install py-spy)")
        if args.profile
        else "",
    )
    if args.profile and not usable(settings.pyspy):
        log(f"--profile: {settings.pyspy}")
    not_run: dict[str, str] = {}
    for p in points:
        if p.proxy == "nginx" and not usable(nginx):
            not_run[p.name] = nginx.removeprefix("not run: ")
        elif p.proxy == "envoy" and not usable(envoy):
            not_run[p.name] = envoy.removeprefix("not run: ")
        elif p.grpc and not usable(h2load):
            not_run[p.name] = "h2load " + h2load.removeprefix("not run: ")
    if any(p.proxy == "meshmirror" for p in points):
        err = addon_importable()
        if err:
            log(f"the addon does not import ({err}); its points are not run")
            for p in points:
                if p.proxy == "meshmirror":
                    not_run[p.name] = f"addon does not import: {err}"
    return settings, not_run


def run_rounds(env: Env, runnable: list[Point], results: dict[str, list[dict[str, Any]]]) -> None:
    """Every round measures every runnable point, the order rotated by one each round."""
    for rnd in range(env.settings.rounds):
        k = rnd % len(runnable) if runnable else 0
        for p in runnable[k:] + runnable[:k]:
            t = time.monotonic()
            try:
                r = measure(env, p, rnd)
            except BenchError as e:
                r = {"round": rnd, "error": str(e)}
                log(f"round {rnd + 1} {p.name}: FAILED: {e}")
            else:
                log(
                    f"round {rnd + 1} {p.name}: {r['closed']['rps']:g} req/s, fixed-rate "
                    f"p99 {r['open']['p99_ms']} ms, other CPU "
                    f"{r['other_cpu_cores']} cores, "
                    f"mirror {r['mirror']}, "
                    f"{time.monotonic() - t:.1f} s"
                )
            results[p.name].append(r)


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "_serve":
        return serve_main(argv[1:])
    if argv and argv[0] == "_load":
        return load_main(argv[1:])
    if argv and argv[0] == "_serve_grpc":
        return serve_grpc_main(argv[1:])
    if argv and argv[0] == "_grpc_load":
        return grpc_load_main(argv[1:])
    args = parse_args(argv)
    points = [p for p in POINTS if p.name in args.points]
    settings, not_run = configure(args, points)
    runnable = [p for p in points if p.name not in not_run]
    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    out_path: Path = args.out or ROOT / "bench-results" / f"bench-{stamp}.json"
    tmp = Path(tempfile.mkdtemp(prefix="meshmirror-bench-"))
    children = Children()
    results: dict[str, list[dict[str, Any]]] = {p.name: [] for p in runnable}
    soak_res: dict[str, Any] | None = None
    env: Env | None = None
    interrupted = False
    try:
        with sigterm_stops():
            ports, controls = start_backends(children, tmp)
            if any(p.grpc for p in runnable):
                grpc_ports, grpc_controls = start_grpc_backends(children, tmp)
                ports.update(grpc_ports)
                controls.update(grpc_controls)
            env = Env(
                settings,
                children,
                tmp,
                ports,
                controls,
                rate=settings.rate,
                grpc_rate=settings.rate,
            )
            log(
                f"{len(runnable)} point(s) x {settings.rounds} round(s), closed "
                f"{settings.duration:g} s + fixed-rate {settings.open_duration:g} s each, "
                f"load: {settings.loadgen}; backends {ports}"
            )
            run_rounds(env, runnable, results)
            sp = next((p for p in runnable if p.name == settings.soak_point), None)
            if settings.soak > 0 and sp is not None:
                log(f"soak: {settings.soak:g} s of full load on {sp.name}")
                try:
                    soak_res = soak(env, sp)
                except BenchError as e:
                    soak_res = {"point": sp.name, "error": str(e)}
    except (KeyboardInterrupt, Stop):
        interrupted = True
        log("interrupted: stopping everything this run started")
    finally:
        children.stop_all()
        if args.keep_tmp:
            log(f"configs and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    routing: dict[str, Any] = {"status": "not run: --no-routing"}
    if interrupted:
        routing = {"status": "not run: interrupted"}
    elif not args.no_routing:
        routing = run_routing_bench(args.quick)
    aggs = {
        name: aggregate(next(p for p in POINTS if p.name == name), rs)
        for name, rs in results.items()
    }
    target_rows = targets(aggs, routing, soak_res)
    meta = {
        "command": "scripts/bench " + " ".join(argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_s": round(time.time() - started, 1),
        "machine": machine_info(settings.nginx, settings.wrk, settings.h2load, settings.envoy),
        "settings": {k: v for k, v in vars(settings).items()},
        "fixed_rate": env.rate if env is not None else settings.rate,
        "fixed_rate_grpc": env.grpc_rate if env is not None else settings.rate,
        "interrupted": interrupted,
    }
    doc = {
        "meta": meta,
        "points": {
            p.name: {"label": p.label, "aggregate": aggs.get(p.name), "rounds": results.get(p.name)}
            for p in points
            if p.name in results
        },
        "not_run": not_run,
        "soak": soak_res,
        "routing": routing,
        "targets": target_rows,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=2) + "\n")
    if args.svg:
        args.svg.parent.mkdir(parents=True, exist_ok=True)
        args.svg.write_text(svg_chart(aggs))
    print_report(doc, aggs, results)
    print(f"\nJSON: {out_path}" + (f"; SVG: {args.svg}" if args.svg else ""))
    if interrupted:
        return 130
    failed_all = [n for n, a in aggs.items() if "rps" not in a]
    return 1 if failed_all else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
