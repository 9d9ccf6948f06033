"""Soak: a bounded run of mixed traffic against mixed mirror faults; prints the proxy's open file
descriptors and RSS sampled over time, then checks that every sampled copy is accounted for.

    scripts/soak [--seconds 180] [--clients 4] [--sample-every 5] [--hostile]

`--hostile` adds a candidate under test beside the six mirrors, and turns comparison on: for the
first half of the run it answers as the primary does, for the second half it answers with
decompression bombs (zstd, gzip, br, deflate, stacked), bodies whose diff is costly (the
primary's 250 KiB of lines, shuffled) and JSON keys full of escape sequences. It then prints the
primary's latency in each half (p50 / p99 of the small requests, as the clients saw them), how
the candidate's copies were compared, and checks that the proxy printed no raw control
character.

Everything listens on 127.0.0.1 with OS-chosen ports and is stopped by pid at the end. Exit
status 0 when the figures are flat and the accounting holds (and, with --hostile, the
primary's p99 held and nothing raw was printed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import sys
import tempfile
import threading
import time
import unicodedata
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import bombs  # noqa: E402
from tests.support import meshconfig as mc  # noqa: E402
from tests.support import servers as srv  # noqa: E402
from tests.support.mitmdump import start_proxy  # noqa: E402
from tests.support.ports import refused_port  # noqa: E402
from tests.support.procfs import fds_and_rss, tree_memory_mb  # noqa: E402

# Allowed growth between the first sample after warm-up and the last sample.
MAX_FD_GROWTH = 24
MAX_RSS_GROWTH_KIB = 40 * 1024


# The paths whose answers the hostile candidate turns against the comparison, by request number.
HOSTILE_PATHS = {5: "/text", 10: "/json", 15: "/bomb"}
# With --hostile a client asks for one of them every 20 requests; the rest are small.
HOSTILE_EVERY = 20
# The hostile half fails the soak when its p99 (of the small requests) is this much above the
# benign half's: a stall of the proxy, not the noise of a shared machine (on a shared 2-core VM
# the halves' p99 differed by 0.8-1.4x with a candidate that never turned hostile, and by
# 0.6-2.6x with a hostile one, whose comparisons take up to a quarter of a core).
MAX_P99_RATIO = 3.0
MAX_P99_SLACK = 0.050  # seconds


def client(
    port: int,
    stop: threading.Event,
    counts: list[int],
    errors: list[str],
    latencies: list[tuple[float, float]] | None = None,
) -> None:
    """Requests back to back on one keep-alive connection; with `latencies`, every 20th is one
    of HOSTILE_PATHS and each small request's (start, seconds) is appended to it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    i = 0
    while not stop.is_set():
        try:
            path, headers = "/s", HOST
            if latencies is not None and i % HOSTILE_EVERY in HOSTILE_PATHS:
                path, headers = HOSTILE_PATHS[i % HOSTILE_EVERY], CANDIDATE_HOST
            start = time.monotonic()
            if i % 4 == 0:
                conn.request("POST", f"{path}?i={i}", body=b"p" * (i % 2000), headers=headers)
            else:
                conn.request("GET", f"{path}?i={i}", headers=headers)
            resp = conn.getresponse()
            resp.read()
            if latencies is not None and path == "/s":
                latencies.append((start, time.monotonic() - start))
            if resp.status != 200:
                errors.append(f"status {resp.status}")
            counts[0] += 1
        except (OSError, http.client.HTTPException) as e:
            errors.append(repr(e))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        i += 1
    conn.close()


HOST = {"Host": "app.example.com"}
# With --hostile: requests for this Host are copied to the candidate, and compared.
CANDIDATE_HOST = {"Host": "candidate.example.com"}
CANDIDATE_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: candidate
  annotations: {meshmirror.io/compare: "true"}
spec:
  hosts: [candidate.example.com]
  http:
  - route:
    - destination: {host: primary.local}
    mirror: {host: candidate.local}
"""


class Candidate:
    """The primary's answers and the candidate's: the same until `hostile` is set."""

    def __init__(self, hostile: bool) -> None:
        self.hostile = threading.Event()
        lines = [f"line {i % 100:02d}" for i in range(32_000)]  # 250 KiB of short lines
        self.text = "\n".join(lines).encode()
        random.Random(23).shuffle(lines)
        self.shuffled = "\n".join(lines).encode()
        keys = ("\x1b[2J\x1b[31mred", "\u202egnp.exe", "x\nmirror sent 200 rule=forged")
        self.forged = json.dumps({"a": 1, **{k: 2 for k in keys}}).encode()
        # Each inflates to 100 MiB (built only for --hostile: it takes a few seconds).
        self.bombs = list(bombs.bombs(100).items()) if hostile else []
        self._next_bomb = 0

    def primary(self, target: str) -> tuple[bytes, bytes]:
        path = target.partition("?")[0]
        if path == "/text":
            return b"Content-Type: text/plain\r\n", self.text
        if path in ("/json", "/bomb"):
            return b"Content-Type: application/json\r\n", b'{"a": 1}'
        return b"", b"ok"

    def candidate(self, target: str) -> tuple[bytes, bytes]:
        path = target.partition("?")[0]
        if not self.hostile.is_set():
            return self.primary(target)
        if path == "/text":
            return b"Content-Type: text/plain\r\n", self.shuffled
        if path == "/json":
            return b"Content-Type: application/json\r\n", self.forged
        if path == "/bomb":
            coding, body = self.bombs[self._next_bomb % len(self.bombs)]
            self._next_bomb += 1
            return b"Content-Encoding: %s\r\n" % coding.encode(), body
        return b"", b"ok"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def unsafe_characters(text: str) -> int:
    """Characters a terminal may act on (newlines excepted) in mitmdump's output."""
    return sum(
        1
        for c in text
        if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cn")
    )


def scrape(output: Callable[[], str]) -> dict[str, float]:
    """`meshmirror_comparisons*` samples from the proxy's /metrics: {"name{labels}": value}."""
    m = re.search(r"Prometheus metrics at (http://127\.0\.0\.1:\d+/metrics)", output())
    if m is None:
        return {}
    with urllib.request.urlopen(m.group(1), timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("meshmirror_comparisons") and "candidate" in line:
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=180.0, help="traffic duration (default 180)")
    ap.add_argument("--clients", type=int, default=4, help="keep-alive client threads")
    ap.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    ap.add_argument(
        "--hostile",
        action="store_true",
        help="add a hostile candidate and comparison (see the module docstring)",
    )
    args = ap.parse_args(argv)

    answers = Candidate(args.hostile)
    primary = srv.FaultServer(srv.by_path(answers.primary))
    healthy = srv.FaultServer(srv.status(200))
    failing = srv.FaultServer(srv.status(500))
    silent = srv.FaultServer(srv.silent)
    resetting = srv.FaultServer(srv.reset_mid_response)
    garbage = srv.FaultServer(srv.garbage)
    servers = [primary, healthy, failing, silent, resetting, garbage]
    mirrors = {
        "healthy.local": mc.service_entry("healthy", "healthy.local", healthy.port),
        "failing.local": mc.service_entry("failing", "failing.local", failing.port),
        "refusing.local": mc.service_entry("refusing", "refusing.local", refused_port()),
        "silent.local": mc.service_entry("silent", "silent.local", silent.port),
        "resetting.local": mc.service_entry("resetting", "resetting.local", resetting.port),
        "garbage.local": mc.service_entry("garbage", "garbage.local", garbage.port),
    }
    extra: list[str] = []
    docs: tuple[str, ...] = ()
    if args.hostile:
        candidate = srv.FaultServer(srv.by_path(answers.candidate))
        servers.append(candidate)
        # A rule of its own, every copy compared: the six mirrors' rule stays as it was.
        docs = (mc.service_entry("candidate", "candidate.local", candidate.port), CANDIDATE_VS)
        extra = ["mirror_metrics=127.0.0.1:0"]
    tmp = Path(tempfile.mkdtemp(prefix="meshmirror-soak-"))
    cfg = mc.mirror_config(tmp / "soak.yaml", primary.port, mirrors, percentage=50, extra_docs=docs)
    proxy = start_proxy(
        f"http://127.0.0.1:{primary.port}",
        [cfg],
        "mirror_timeout=500ms",
        "mirror_max_inflight=32",
        "mirror_max_body=1k",
        "mirror_verbosity=summary",
        "mirror_summary_interval=0",
        "mirror_breaker_cooldown=2s",
        *extra,
    )
    pid = proxy.proc.pid
    stop = threading.Event()
    counts = [0]
    errors: list[str] = []
    latencies: list[tuple[float, float]] | None = [] if args.hostile else None
    threads = [
        threading.Thread(
            target=client, args=(proxy.port, stop, counts, errors, latencies), daemon=True
        )
        for _ in range(args.clients)
    ]
    hostile_from = 0.0
    comparisons: dict[str, float] = {}
    samples: list[tuple[float, int, int, int]] = []
    ok = True
    try:
        t0 = time.monotonic()
        for t in threads:
            t.start()
        print(
            f"soak: {args.seconds:g}s, {args.clients} clients, proxy pid {pid}, "
            f"{len(mirrors)} mirrors at 50%"
            + (
                "; 1 request in 20 copied to the candidate and compared, hostile from half-time"
                if args.hostile
                else ""
            )
        )
        print(f"{'t/s':>6} {'requests':>9} {'req/s':>7} {'fds':>5} {'rss/MiB':>8}")
        last_n, last_t = 0, t0
        while True:
            now = time.monotonic()
            fds, rss = fds_and_rss(pid)
            n = counts[0]
            rate = (n - last_n) / max(now - last_t, 1e-9)
            last_n, last_t = n, now
            samples.append((now - t0, n, fds, rss))
            print(f"{now - t0:6.1f} {n:9d} {rate:7.0f} {fds:5d} {rss / 1024:8.1f}", flush=True)
            if now - t0 >= args.seconds:
                break
            if args.hostile and not answers.hostile.is_set() and now - t0 >= args.seconds / 2:
                answers.hostile.set()
                hostile_from = time.monotonic()
                print(f"{now - t0:6.1f} the candidate turns hostile", flush=True)
            wait = args.sample_every
            if args.hostile and not answers.hostile.is_set():
                wait = min(wait, args.seconds / 2 - (now - t0))
            time.sleep(min(wait, max(0.0, args.seconds - (now - t0))))
        stop.set()
        for t in threads:
            t.join(15)
        time.sleep(1.0)  # past mirror_timeout: every copy has finished
        fds, rss = fds_and_rss(pid)
        samples.append((time.monotonic() - t0, counts[0], fds, rss))
        print(f"{'idle':>6} {counts[0]:9d} {'':>7} {fds:5d} {rss / 1024:8.1f}")
        if args.hostile:
            tree = tree_memory_mb(pid)
            print(
                f"mitmdump and its children (sender, comparison process): "
                f"rss {tree['VmRSS']:.1f} MiB, peak {tree['VmHWM']:.1f} MiB"
            )
            comparisons = scrape(lambda: proxy.output)
    finally:
        stop.set()
        t_stop = time.monotonic()
        proxy.stop(timeout=15)
        stop_s = time.monotonic() - t_stop
        for s in servers:
            s.close()

    # Flatness: compare the first sample after a warm-up (a fifth of the run) with the last one.
    warm = next((s for s in samples if s[0] >= args.seconds / 5), samples[0])
    end = samples[-1]
    fd_growth, rss_growth = end[2] - warm[2], end[3] - warm[3]
    print(
        f"resources: fds {warm[2]} -> {end[2]} ({fd_growth:+d}), "
        f"rss {warm[3] / 1024:.1f} -> {end[3] / 1024:.1f} MiB ({rss_growth / 1024:+.1f}); "
        f"max fds {max(s[2] for s in samples)}, max rss {max(s[3] for s in samples) / 1024:.1f} MiB"
    )
    if fd_growth > MAX_FD_GROWTH or rss_growth > MAX_RSS_GROWTH_KIB:
        print("FAIL: resources grew beyond the allowed bound")
        ok = False
    print(f"shutdown (SIGTERM) took {stop_s:.2f}s, exit status {proxy.proc.returncode}")
    if stop_s > 10:
        ok = False
    print(f"client requests: {counts[0]}, client errors: {len(errors)}")
    if errors:
        print("  e.g. " + "; ".join(errors[:3]))
        ok = False

    if args.hostile:
        ok = hostile_report(latencies or [], t0, hostile_from, comparisons, proxy.output) and ok

    summary = mc.last_summary(proxy.lines)
    print("accounting (sampled = sent + failed + dropped + skipped):")
    clusters = len(mirrors) + (1 if args.hostile else 0)
    if len(summary) != clusters:
        print(f"FAIL: expected {clusters} clusters in the summary, got {len(summary)}")
        ok = False
    for name, c in sorted(summary.items()):
        total = mc.accounted(c)
        mark = "ok" if total == c["sampled"] else "MISMATCH"
        ok = ok and total == c["sampled"]
        detail = " ".join(f"{k}={v}" for k, v in c.items() if k not in ("sampled", "sent") and v)
        print(f"  {mark:8} {name}: sampled={c['sampled']} sent={c['sent']} {detail}")
    print("soak: PASS" if ok else "soak: FAIL")
    return 0 if ok else 1


def hostile_report(
    latencies: list[tuple[float, float]],
    t0: float,
    hostile_from: float,
    comparisons: dict[str, float],
    output: str,
) -> bool:
    """The primary's latency in each half, the candidate's comparisons, raw characters."""
    ok = True
    warm = t0 + (hostile_from - t0) / 5
    halves = {
        "benign": [s for t, s in latencies if warm <= t < hostile_from],
        "hostile": [s for t, s in latencies if t >= hostile_from + 1.0],
    }
    shown = {}
    for name, values in halves.items():
        if len(values) < 100:
            print(f"FAIL: only {len(values)} small requests in the {name} half")
            return False
        shown[name] = (percentile(values, 50), percentile(values, 99), len(values))
    (b50, b99, bn), (h50, h99, hn) = shown["benign"], shown["hostile"]
    print(
        f"primary latency (small requests, as the clients saw them): benign p50 "
        f"{b50 * 1000:.1f}ms p99 {b99 * 1000:.1f}ms (n={bn}); hostile p50 {h50 * 1000:.1f}ms "
        f"p99 {h99 * 1000:.1f}ms (n={hn}); p99 ratio {h99 / b99:.2f}"
    )
    if h99 > max(MAX_P99_RATIO * b99, b99 + MAX_P99_SLACK):
        print(
            f"FAIL: the primary's p99 grew beyond {MAX_P99_RATIO:g}x (and "
            f"{MAX_P99_SLACK * 1000:.0f}ms) with the hostile candidate"
        )
        ok = False
    reasons = {
        k.split('reason="')[1].split('"')[0]: int(v)
        for k, v in comparisons.items()
        if k.startswith("meshmirror_comparisons_not_compared_total")
    }
    results = {
        k.split('result="')[1].split('"')[0]: int(v)
        for k, v in comparisons.items()
        if k.startswith("meshmirror_comparisons_total")
    }
    print(
        "the candidate's copies: "
        + " ".join(f"{k}={v}" for k, v in sorted(results.items()))
        + "; not compared by reason: "
        + (" ".join(f"{k}={v}" for k, v in sorted(reasons.items())) or "none")
    )
    if not reasons:
        print("FAIL: every copy of the hostile candidate was compared: it was not hostile")
        ok = False
    raw = unsafe_characters(output)
    print(f"raw control characters in mitmdump's output: {raw}")
    if raw:
        ok = False
    return ok


if __name__ == "__main__":
    sys.exit(main())
