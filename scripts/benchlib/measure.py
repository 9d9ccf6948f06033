"""One measurement (a point in a round: start its proxy, warm up, closed loop, fixed rate,
stop, read the counters) and the soak (one long closed-loop run with RSS sampled).

Contract: every process a measurement starts is stopped before it returns, also when it raises
BenchError; a proxy binds its port itself (mitmdump `-p 0` and Envoy's port 0, read from /proc)
except nginx, which must be told one (it rejects port 0) and gets a picked port, retried when
taken. gRPC points get the gRPC load (grpcload.py) and their own fixed rate (half the first gRPC
point's closed-loop rate), HTTP points the HTTP load.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib.backends import backend_counts, settled_counts
from benchlib.common import (
    ADDON,
    BENCH_PATH,
    BENCH_SCRIPT,
    BIN,
    LOOPBACK,
    MIRROR_SERVICE,
    BenchError,
    log,
)
from benchlib.envoy_proxy import mirror_counters, start_envoy
from benchlib.grpcload import h2load_argv, parse_h2load, write_body
from benchlib.loadgen import WRK_LUA, parse_wrk
from benchlib.points import (
    PLAIN_HTTP2_SCRIPT,
    STATS_SCRIPT,
    TIMELINE_SCRIPT,
    Point,
    meshmirror_yaml,
    nginx_conf,
)
from benchlib.procs import Child, Children, NoiseMeter, tail, wait_until
from benchlib.profile import record as record_profile
from benchlib.profile import summarise as summarise_profile
from benchlib.timeline import analyse as analyse_timeline
from benchlib.tools import usable
from tests.support.meshconfig import last_summary_line, parse_summary
from tests.support.ports import PortTaken, on_picked_port
from tests.support.procfs import listening_ports, tree_cpu_seconds, tree_memory_mb


@dataclass
class Settings:
    """The run's knobs, from the command line (written to the JSON as they are)."""

    rounds: int
    duration: float
    open_duration: float
    warmup: float
    connections: int
    rate: float | None
    timeout: float
    max_open_conns: int
    loadgen: str  # "wrk" or "python"
    wrk: str
    nginx: str
    h2load: str  # the gRPC points' closed-loop load (or why it cannot run)
    envoy: str  # Envoy's binary (or why it cannot run)
    envoy_concurrency: int
    termlog: str
    soak: float
    soak_point: str
    quick: bool
    timeline: bool = False
    pyspy: str = ""  # py-spy's path with --profile (or why it cannot run); "" without


@dataclass
class Env:
    """What every measurement of a run shares; `rate` (HTTP) and `grpc_rate` are set by the
    first closed loop of a point of that protocol unless --rate gave them."""

    settings: Settings
    children: Children
    tmp: Path
    ports: dict[str, int]  # role -> backend port ("refused" is a closed port)
    controls: dict[str, int]  # backend process -> control port
    rate: float | None = None
    grpc_rate: float | None = None


@dataclass
class Proxy:
    """A started proxy: its process and port; where the addon writes its stats at shutdown
    (meshmirror points); Envoy's admin port (Envoy points)."""

    child: Child
    port: int
    stats_path: Path | None = None
    admin_port: int | None = None


def start_proxy(env: Env, point: Point, tag: str) -> Proxy:
    d = env.tmp / tag
    d.mkdir(parents=True, exist_ok=True)
    if point.proxy == "nginx":
        return Proxy(*on_picked_port(lambda port: start_nginx(env, point, d, port)))
    if point.proxy == "envoy":
        assert point.mirror is not None
        cfg = d / "bench.yaml"
        cfg.write_text(meshmirror_yaml(point, env.ports["primary"], env.ports[point.mirror]))
        s = env.settings
        child, port, admin = start_envoy(
            env.children, d, cfg, env.ports["primary"], s.envoy, s.envoy_concurrency
        )
        return Proxy(child, port, admin_port=admin)
    return start_mitmdump(env, point, d)


def start_nginx(env: Env, point: Point, d: Path, port: int) -> tuple[Child, int]:
    """nginx on `port`; PortTaken when another process bound it first (on_picked_port retries)."""
    primary = env.ports["primary"]
    mirror_port = env.ports[point.mirror] if point.mirror else None
    conf = d / "nginx.conf"
    (d / "error.log").unlink(missing_ok=True)  # a failed attempt's log must not decide this one
    conf.write_text(nginx_conf(d, port, primary, mirror_port))
    argv = [env.settings.nginx, "-p", str(d), "-c", str(conf), "-e", str(d / "error.log")]
    child = env.children.start(f"nginx {d.name}", argv, d / "proxy.log")
    try:
        # Its own socket, not just "something accepts on the port": that could be the process
        # that took the port first.
        wait_until(
            f"{child.name} listening on {port}",
            lambda: port in listening_ports(child.proc.pid),
            30.0,
            child,
        )
    except BenchError:
        env.children.stop(child)
        logs = tail(d / "error.log", 20) + tail(d / "proxy.log", 20)
        if "Address already in use" in logs:
            raise PortTaken(port) from None
        raise
    return child, port


def start_mitmdump(env: Env, point: Point, d: Path) -> Proxy:
    """mitmdump (with the addon for meshmirror points; with meshmirror's HTTP/2 edges alone for
    the gRPC baseline) on a port it binds itself (`-p 0`)."""
    s = env.settings
    primary = env.ports[point.primary]
    mirror_port = env.ports[point.mirror] if point.mirror else None
    stats_path: Path | None = None
    argv = [
        str(BIN / "mitmdump"),
        "--mode",
        f"reverse:http://{LOOPBACK}:{primary}",
        "--listen-host",
        LOOPBACK,
        "-p",
        "0",
        "--set",
        "flow_detail=0",
        "--set",
        f"termlog_verbosity={s.termlog}",
        # The addon turns this on itself; the baseline gets it too so only the addon differs.
        "--set",
        "keep_host_header=true",
    ]
    environ = dict(os.environ)
    if s.timeline:
        argv += ["--set", f"mirror_timeline={d / 'timeline.jsonl'}"]
        if point.proxy != "meshmirror":
            # Plain mitmdump gets the timeline's markers alone, from the same module.
            script = env.tmp / "bench_timeline_addon.py"
            if not script.exists():
                script.write_text(TIMELINE_SCRIPT)
            argv += ["-s", str(script)]
            environ["PYTHONPATH"] = str(ADDON.parent)
    if point.grpc and point.proxy == "mitmdump":
        script = env.tmp / "bench_plain_http2.py"
        if not script.exists():
            script.write_text(PLAIN_HTTP2_SCRIPT)
        argv += ["-s", str(script)]
        environ["PYTHONPATH"] = str(ADDON.parent)
    if point.proxy == "meshmirror":
        assert mirror_port is not None
        cfg = d / "bench.yaml"
        cfg.write_text(meshmirror_yaml(point, primary, mirror_port))
        script = env.tmp / "bench_stats_addon.py"
        if not script.exists():
            script.write_text(STATS_SCRIPT)
        stats_path = d / "mirror-stats.json"
        environ["MESHMIRROR_BENCH_STATS"] = str(stats_path)
        argv += [
            "-s",
            str(ADDON),
            "-s",
            str(script),
            "--set",
            f"mirror_config={cfg}",
            "--set",
            "mirror_verbosity=summary",
            "--set",
            "mirror_timeout=1s",
        ]
        for option in point.options:
            argv += ["--set", option]
    child = env.children.start(f"mitmdump {d.name}", argv, d / "proxy.log", env=environ)
    # At termlog_verbosity=warn mitmdump does not print "listening at", so the port is read
    # from the listening socket the process holds (its children hold none).
    ports: set[int] = set()

    def bound() -> bool:
        with contextlib.suppress(OSError):
            ports.update(listening_ports(child.proc.pid))
        return bool(ports)

    wait_until(f"{child.name} to listen", bound, 30.0, child)
    if len(ports) != 1:
        raise BenchError(f"{child.name} listens on {sorted(ports)}, expected one port")
    return Proxy(child, ports.pop(), stats_path)


def run_load(
    env: Env,
    mode: str,
    port: int,
    duration: float,
    *,
    conns: int | None = None,
    rate: float | None = None,
    watch_pid: int | None = None,
    use_wrk: bool | None = None,
    trace: Path | None = None,
    grpc: bool = False,
    calls: int | None = None,
) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """Run one load (wrk or `_load` child; for gRPC h2load or `_grpc_load`) to completion;
    sample the proxy's RSS meanwhile. `calls`: h2load's closed loop ends after that many calls
    instead of after `duration`."""
    s = env.settings
    conns = conns or s.connections
    wrk = (s.loadgen == "wrk") if use_wrk is None else use_wrk
    out_path = env.tmp / f"load-{time.monotonic_ns()}.out"
    h2load_log = out_path.with_suffix(".tsv")
    if grpc and mode == "closed":
        body = write_body(env.tmp / "grpc-request.bin")
        argv = h2load_argv(s.h2load, port, duration, conns, body, h2load_log, calls)
    elif grpc:
        argv = [sys.executable, str(BENCH_SCRIPT), "_grpc_load", mode, "--port", str(port)]
        argv += ["--duration", f"{duration}", "--timeout", f"{s.timeout}", "--rate", f"{rate}"]
    elif mode == "closed" and wrk:
        lua = env.tmp / "bench.lua"
        if not lua.exists():
            lua.write_text(WRK_LUA)
        secs = max(1, round(duration))
        argv = [s.wrk, "-t1", f"-c{conns}", f"-d{secs}s", "--timeout", f"{s.timeout:g}s"]
        argv += ["-s", str(lua), f"http://{LOOPBACK}:{port}{BENCH_PATH}"]
    else:
        argv = [sys.executable, str(BENCH_SCRIPT), "_load", mode, "--port", str(port)]
        argv += ["--duration", f"{duration}", "--timeout", f"{s.timeout}"]
        argv += ["--connections", str(conns), "--max-connections", str(s.max_open_conns)]
        if rate is not None:
            argv += ["--rate", f"{rate}"]
        if trace is not None:
            argv += ["--trace", str(trace)]
    child = env.children.start(f"load {mode}", argv, out_path)
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    deadline = t0 + duration + s.timeout + 30
    try:
        while child.proc.poll() is None:
            if time.monotonic() > deadline:
                raise BenchError(f"load generator {argv[0]} did not finish by its deadline")
            if watch_pid is not None:
                with contextlib.suppress(OSError):
                    samples.append((time.monotonic() - t0, tree_memory_mb(watch_pid)["VmRSS"]))
            time.sleep(0.25 if duration < 5 else 1.0)
    finally:
        env.children.stop(child)
    text = out_path.read_text(errors="replace")
    if child.proc.returncode != 0:
        raise BenchError(f"load generator exited {child.proc.returncode}: {text.strip()[-300:]}")
    if argv[0] == s.wrk:
        return parse_wrk(text, conns), samples
    if argv[0] == s.h2load:
        return parse_h2load(text, h2load_log, conns), samples
    return json.loads(text.strip().splitlines()[-1]), samples


def measure(env: Env, point: Point, rnd: int) -> dict[str, Any]:
    s = env.settings
    tag = f"r{rnd}-{point.name}"
    res: dict[str, Any] = {"round": rnd}
    before = backend_counts(env.controls)
    t_start = time.monotonic()
    proxy = start_proxy(env, point, tag)
    child, port, stats_path = proxy.child, proxy.port, proxy.stats_path
    pid = child.proc.pid
    mitm = point.proxy in ("mitmdump", "meshmirror")
    try:
        res["startup_s"] = round(time.monotonic() - t_start, 3)
        warm, _ = run_load(
            env, "closed", port, s.warmup, conns=4, use_wrk=False, **warmup_calls(env, point)
        )
        if warm["requests"] == 0 or warm["errors"]:
            state = "alive" if child.proc.poll() is None else f"exited {child.proc.returncode}"
            raise BenchError(
                f"warm-up failed: {warm['requests']} ok, {warm['error_classes']}; proxy {state}"
                f"; log: {tail(child.log_path)}"
            )
        rss_warm = tree_memory_mb(pid)["VmRSS"]
        noise = NoiseMeter(env.children)
        noise.start()
        c0 = tree_cpu_seconds(pid)
        sampler = None
        if usable(s.pyspy) and mitm:
            sampler = record_profile(s.pyspy, pid, s.duration, env.tmp / tag / "profile.raw")
        closed, samples_c = run_load(
            env, "closed", port, s.duration, watch_pid=pid, grpc=point.grpc
        )
        c1 = tree_cpu_seconds(pid)
        if sampler is not None:
            try:
                sampler.wait(15)
            except subprocess.TimeoutExpired:
                sampler.kill()
                sampler.wait()
            res["profile"] = summarise_profile(env.tmp / tag / "profile.raw")
        res["other_cpu_cores"] = noise.cores()
        rate = fixed_rate(env, point, closed["rps"])
        # The HTTP client alone names its requests for the timeline's join.
        trace = env.tmp / tag / "trace.jsonl" if s.timeline and not point.grpc else None
        opened, samples_o = run_load(
            env,
            "open",
            port,
            s.open_duration,
            rate=rate,
            watch_pid=pid,
            trace=trace,
            grpc=point.grpc,
        )
        c2 = tree_cpu_seconds(pid)
        mem = tree_memory_mb(pid)
        res["closed"] = closed
        res["open"] = opened
        res["cpu_closed_s"] = round(c1 - c0, 3)
        res["cpu_util_closed"] = round((c1 - c0) / closed["duration_s"], 3)
        res["cpu_ms_per_req"] = (
            round((c1 - c0) / closed["requests"] * 1000, 4) if closed["requests"] else None
        )
        res["cpu_open_s"] = round(c2 - c1, 3)
        res["cpu_ms_per_req_open"] = (
            round((c2 - c1) / opened["requests"] * 1000, 4) if opened["requests"] else None
        )
        res["rss_after_warmup_mb"] = round(rss_warm, 1)
        res["rss_end_mb"] = round(mem["VmRSS"], 1)
        res["peak_rss_mb"] = round(mem["VmHWM"], 1)
        res["rss_growth_mb"] = round(mem["VmHWM"] - rss_warm, 1)
        res["rss_samples_max_mb"] = round(max((r for _, r in samples_c + samples_o), default=0), 1)
        res["client_ok"] = warm["requests"] + closed["requests"] + opened["requests"]
        if proxy.admin_port is not None:
            try:
                res["envoy_mirror"] = mirror_counters(proxy.admin_port, MIRROR_SERVICE)
            except (OSError, ValueError) as e:
                res["envoy_mirror"] = {"error": str(e)}
    finally:
        t_stop = time.monotonic()
        rc = env.children.stop(child, grace=15.0)
        res["stop_s"] = round(time.monotonic() - t_stop, 3)
        res["exit_code"] = rc
    proxy_log = child.log_path.read_text(errors="replace")
    res["log_tail"] = proxy_log.strip().splitlines()[-5:]
    if s.timeline and mitm:
        d = env.tmp / tag
        res["timeline"] = analyse_timeline(d / "timeline.jsonl", d / "trace.jsonl")
    after = settled_counts(env.controls)
    delta = {
        k: after["requests"].get(k, 0) - before["requests"].get(k, 0) for k in after["requests"]
    }
    res["backend_requests"] = delta
    res["mirror_hosts"] = after["hosts"].get(point.mirror or "", {})
    mirror = res["mirror"] = {"received": delta.get(point.mirror, 0) if point.mirror else 0}
    if point.proxy == "meshmirror":
        stats: Any = None
        if stats_path is not None and stats_path.exists():
            stats = json.loads(stats_path.read_text() or "null")
        if not isinstance(stats, dict) or "total" not in stats:
            raise BenchError(
                f"no mirror.stats from the addon ({stats!r}); log: {tail(child.log_path)}"
            )
        total = stats["total"]
        mirror.update(
            sampled=total["sampled"],
            sent=total["sent"],
            failed=total["failed"],
            dropped=total["dropped"],
            skipped=total["skipped"],
            in_flight=total.get("in_flight", 0),
            not_mirrored=stats.get("requests_not_mirrored", {}),
        )
        finished = (
            total["sent"]
            + sum(total["failed"].values())
            + sum(total["dropped"].values())
            + sum(total["skipped"].values())
        )
        mirror["accounted"] = finished == total["sampled"]
        line = last_summary_line(proxy_log.splitlines())
        res["summary"] = None if line is None else {"line": line, "clusters": parse_summary(line)}
        summ = res["summary"]
        if summ and summ["clusters"]:
            sampled = sum(c.get("sampled", 0) for c in summ["clusters"].values())
            mirror["summary_agrees"] = sampled == total["sampled"]
        if point.grpc:
            mirror["grpc_status"] = total.get("grpc_status", {})
    elif point.proxy in ("nginx", "envoy") and point.mirror and point.percent:
        # Both mirror every request at 100%: what the primary served is what was sampled.
        mirror["sampled"] = delta.get("primary", 0)
    if rc not in (0, None) and mitm:
        res["warning"] = f"proxy exited with {rc}"
    return res


def warmup_calls(env: Env, point: Point) -> dict[str, Any]:
    """run_load's arguments for a point's warm-up: gRPC's counts calls (about 100 per second
    of --warmup), since h2load would drop the first, slow calls at the end of a timed run."""
    if not point.grpc:
        return {}
    return {"grpc": True, "calls": max(20, round(env.settings.warmup * 100))}


def fixed_rate(env: Env, point: Point, closed_rps: float) -> float:
    """The fixed rate of the point's protocol: --rate, else half the first closed loop's."""
    rate = env.grpc_rate if point.grpc else env.rate
    if rate is None:
        rate = max(20.0, round(closed_rps / 2))
        kind = "gRPC calls" if point.grpc else "req"
        log(f"fixed rate for the open-loop runs: {rate:g} {kind}/s (half of {point.name})")
        if point.grpc:
            env.grpc_rate = rate
        else:
            env.rate = rate
    return rate


def soak(env: Env, point: Point) -> dict[str, Any]:
    """One long closed-loop run at full load with the proxy's RSS sampled every second."""
    s = env.settings
    proxy = start_proxy(env, point, f"soak-{point.name}")
    child, port = proxy.child, proxy.port
    pid = child.proc.pid
    try:
        run_load(env, "closed", port, s.warmup, conns=4, use_wrk=False, **warmup_calls(env, point))
        rss0 = tree_memory_mb(pid)["VmRSS"]
        c0 = tree_cpu_seconds(pid)
        load, samples = run_load(env, "closed", port, s.soak, watch_pid=pid, grpc=point.grpc)
        c1 = tree_cpu_seconds(pid)
        mem = tree_memory_mb(pid)
    finally:
        env.children.stop(child, grace=15.0)
    half = [r for t, r in samples if t >= s.soak / 2]
    return {
        "point": point.name,
        "duration_s": s.soak,
        "rps": load["rps"],
        "requests": load["requests"],
        "errors": load["errors"],
        "cpu_ms_per_req": round((c1 - c0) / load["requests"] * 1000, 4)
        if load["requests"]
        else None,
        "rss_after_warmup_mb": round(rss0, 1),
        "rss_end_mb": round(mem["VmRSS"], 1),
        "peak_rss_mb": round(mem["VmHWM"], 1),
        "growth_mb": round(mem["VmHWM"] - rss0, 1),
        "second_half_growth_mb": round(max(half) - min(half), 1) if half else None,
        "rss_samples_mb": [[round(t, 1), round(r, 1)] for t, r in samples],
    }
