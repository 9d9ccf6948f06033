"""Soak: a bounded run of mixed traffic against mixed mirror faults; prints the proxy's open file
descriptors and RSS sampled over time, then checks that every sampled copy is accounted for.

    scripts/soak [--seconds 180] [--clients 4] [--sample-every 5]

Everything listens on 127.0.0.1 with OS-chosen ports and is stopped by pid at the end. Exit
status 0 when the figures are flat and the accounting holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import meshconfig as mc  # noqa: E402
from tests.support import servers as srv  # noqa: E402
from tests.support.mitmdump import start_proxy  # noqa: E402
from tests.support.ports import refused_port  # noqa: E402
from tests.support.procfs import fds_and_rss  # noqa: E402

# Allowed growth between the first sample after warm-up and the last sample.
MAX_FD_GROWTH = 24
MAX_RSS_GROWTH_KIB = 40 * 1024


def client(port: int, stop: threading.Event, counts: list[int], errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    i = 0
    while not stop.is_set():
        try:
            if i % 4 == 0:
                conn.request("POST", f"/s?i={i}", body=b"p" * (i % 2000), headers=HOST)
            else:
                conn.request("GET", f"/s?i={i}", headers=HOST)
            resp = conn.getresponse()
            resp.read()
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=180.0, help="traffic duration (default 180)")
    ap.add_argument("--clients", type=int, default=4, help="keep-alive client threads")
    ap.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    args = ap.parse_args(argv)

    primary = srv.FaultServer(srv.status(200))
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
    tmp = Path(tempfile.mkdtemp(prefix="meshmirror-soak-"))
    cfg = mc.mirror_config(tmp / "soak.yaml", primary.port, mirrors, percentage=50)
    proxy = start_proxy(
        f"http://127.0.0.1:{primary.port}",
        [cfg],
        "mirror_timeout=500ms",
        "mirror_max_inflight=32",
        "mirror_max_body=1k",
        "mirror_verbosity=summary",
        "mirror_summary_interval=0",
        "mirror_breaker_cooldown=2s",
    )
    pid = proxy.proc.pid
    stop = threading.Event()
    counts = [0]
    errors: list[str] = []
    threads = [
        threading.Thread(target=client, args=(proxy.port, stop, counts, errors), daemon=True)
        for _ in range(args.clients)
    ]
    samples: list[tuple[float, int, int, int]] = []
    ok = True
    try:
        t0 = time.monotonic()
        for t in threads:
            t.start()
        print(f"soak: {args.seconds:g}s, {args.clients} clients, proxy pid {pid}, 6 mirrors at 50%")
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
            time.sleep(min(args.sample_every, max(0.0, args.seconds - (now - t0))))
        stop.set()
        for t in threads:
            t.join(15)
        time.sleep(1.0)  # past mirror_timeout: every copy has finished
        fds, rss = fds_and_rss(pid)
        samples.append((time.monotonic() - t0, counts[0], fds, rss))
        print(f"{'idle':>6} {counts[0]:9d} {'':>7} {fds:5d} {rss / 1024:8.1f}")
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

    summary = mc.last_summary(proxy.lines)
    print("accounting (sampled = sent + failed + dropped + skipped):")
    if len(summary) != len(mirrors):
        print(f"FAIL: expected {len(mirrors)} clusters in the summary, got {len(summary)}")
        ok = False
    for name, c in sorted(summary.items()):
        total = mc.accounted(c)
        mark = "ok" if total == c["sampled"] else "MISMATCH"
        ok = ok and total == c["sampled"]
        detail = " ".join(f"{k}={v}" for k, v in c.items() if k not in ("sampled", "sent") and v)
        print(f"  {mark:8} {name}: sampled={c['sampled']} sent={c['sent']} {detail}")
    print("soak: PASS" if ok else "soak: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
