"""The seed scenario on one machine: cluster A mirrors 50% of /headers to cluster B.

Starts two real httpbin servers (cluster A's httpbin v1 and cluster B's httpbin), each writing an
access log that includes the Host header (the stand-in for the Envoy access log the seed checks
for `-shadow`), then mitmproxy in reverse-proxy mode with the meshmirror addon reading
configs/seed/cluster-a (or, with `--engine envoy`, real Envoy on that config's export through
`meshmirror run --engine envoy`), sends N requests `GET /headers` with `Host: httpbin` and prints
the proof: how many reached cluster A, how many mirrored copies reached cluster B and which Host
B saw (on Envoy, also Envoy's own counters for the mirror, which must agree with B's log).

Run it through `scripts/demo` (which runs `scripts/setup` first). Every process it starts is
stopped by pid on exit, on errors and on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.client
import json
import math
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

ROOT = Path(__file__).resolve().parent.parent
# tests/support (starting, stopping and waiting for processes, /proc) is imported from the
# repository root.
sys.path.insert(0, str(ROOT))

from tests.support.processes import spawn, stop, wait_for  # noqa: E402
from tests.support.procfs import listening_ports  # noqa: E402

SEED_A = ROOT / "configs" / "seed" / "cluster-a"
LOOPBACK = "127.0.0.1"
# The loopback ports configs/seed uses (WorkloadEntry httpbin-v1 and the ServiceEntry endpoint).
DEFAULT_PORT_A = 28080
DEFAULT_PORT_B = 28081
# The proxy plays cluster A's ingress gateway; it is not in the configs, so any port works.
DEFAULT_PROXY_PORT = 28000
DEFAULT_WEB_PORT = 8081
CLIENT_HOST = "httpbin"
SHADOW_HOST = "httpbin-shadow"
PATH = "/headers"
SERVE_COMMAND = "_serve-httpbin"

ACCESS_LINE = re.compile(
    r'"(?P<method>\S+) (?P<path>\S+) (?P<proto>[^"]*)" (?P<status>\S+) host="(?P<host>[^"]*)"'
)
LISTENING = re.compile(r"listening at (?:\S+://)?127\.0\.0\.1:(?P<port>\d+)")
WEB_LISTENING = re.compile(r"Web server listening at (?P<url>\S+)")
SERVING = re.compile(r"^SERVING 127\.0\.0\.1:(?P<port>\d+)$")
# mitmproxy's termlog does not print logger names, so the addon's lines are recognised by content.
MITMPROXY_OWN = ("Loading script", "listening at", "Web server listening")
STARTUP_ERRORS = ("error in script", "Error logged during startup", "Traceback")
LOG_RECORD = re.compile(r"^\[\d\d:\d\d:\d\d\.\d+\]\s")
ADDON_WORDS = re.compile(r"mirror|shadow|meshmirror", re.IGNORECASE)
# `meshmirror run --engine envoy` prints Envoy's admin address once it is ready.
ENVOY_ADMIN = re.compile(r"Envoy listening at \S+ \(admin: (?P<admin>http://\S+?),")
MIRROR_CLUSTER = "outbound|80||httpbin.mirror.cluster-b"
MIRROR_STATS = r"^cluster\.outbound\|80\|\|httpbin\.mirror\.cluster-b\.upstream_rq_"
DEFAULT_ADDON = ROOT / "addons" / "mirror.py"


class DemoError(Exception):
    """A failure that ends the demo with a message instead of a traceback."""


class Stop(BaseException):
    """Raised from the SIGINT/SIGTERM handler so that cleanup runs in `finally`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# --------------------------------------------------------------------------------------------
# Child side: one httpbin server with an access log that shows the Host header.
# --------------------------------------------------------------------------------------------


class AccessLogMiddleware:
    """One line per request, gunicorn-like plus the Host header, flushed before the response."""

    def __init__(self, app: WSGIApplication, log: IO[str]) -> None:
        self._app = app
        self._log = log
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        status: list[str] = []

        def recording_start_response(
            status_line: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            status.append(status_line.split(" ", 1)[0])
            return start_response(status_line, headers, exc_info)

        try:
            return self._app(environ, recording_start_response)
        finally:
            self._write(environ, status[0] if status else "-")

    def _write(self, environ: WSGIEnvironment, status: str) -> None:
        path = environ.get("PATH_INFO", "")
        if environ.get("QUERY_STRING"):
            path += "?" + environ["QUERY_STRING"]
        when = time.strftime("%d/%b/%Y %H:%M:%S")
        line = (
            f"{environ.get('REMOTE_ADDR', '-')} - - [{when}] "
            f'"{environ.get("REQUEST_METHOD", "-")} {path} {environ.get("SERVER_PROTOCOL", "-")}" '
            f'{status} host="{environ.get("HTTP_HOST", "")}"\n'
        )
        with self._lock:
            self._log.write(line)
            self._log.flush()


def bind_listener(port: int, fallback: bool) -> socket.socket:
    """Bind and listen on 127.0.0.1:port; with `fallback`, a busy port means any free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
    except OSError as e:
        if not (fallback and e.errno == errno.EADDRINUSE):
            sock.close()
            raise
        sock.bind((LOOPBACK, 0))
    sock.listen(128)
    return sock


def serve_httpbin(argv: Sequence[str]) -> int:
    """Child process entry: serve httpbin:app, print `SERVING 127.0.0.1:PORT` once ready."""
    parser = argparse.ArgumentParser(prog=f"demo.py {SERVE_COMMAND}")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--access-log", type=Path, required=True)
    parser.add_argument("--fallback", action="store_true")
    args = parser.parse_args(argv)

    import logging

    import httpbin  # type: ignore[import-untyped]
    from werkzeug.serving import make_server

    # Our access log replaces werkzeug's (which lacks the Host header).
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        sock = bind_listener(args.port, args.fallback)
    except OSError as e:
        print(f"cannot listen on {LOOPBACK}:{args.port}: {e.strerror}", file=sys.stderr)
        return 3
    with args.access_log.open("a", encoding="utf-8") as log:
        app = AccessLogMiddleware(httpbin.app, log)
        # Passing the bound socket avoids a window where another process could take the port.
        server = make_server(LOOPBACK, 0, app, threaded=True, fd=sock.fileno())
        sock.close()

        def terminate(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, terminate)
        print(f"SERVING {LOOPBACK}:{server.port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    return 0


# --------------------------------------------------------------------------------------------
# Parent side: processes, logs, waits.
# --------------------------------------------------------------------------------------------


@dataclass
class Child:
    """A started process whose combined output is kept in memory and copied to a file."""

    name: str
    proc: subprocess.Popen[str]
    output_file: Path
    lines: list[str] = field(default_factory=list)
    echo: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: threading.Thread | None = None

    def start_reader(self) -> None:
        self._reader = threading.Thread(target=self._read, name=f"read-{self.name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.output_file.open("a", encoding="utf-8") as out:
            for raw in self.proc.stdout:
                line = raw.rstrip("\n")
                with self._lock:
                    self.lines.append(line)
                out.write(raw)
                out.flush()
                if self.echo:
                    print(f"  {self.name.split()[0]} | {line}", flush=True)

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 20) -> str:
        text = "\n".join(f"    {line}" for line in self.snapshot()[-n:])
        return text or "    (no output)"

    def join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=2)


class Children:
    """Every process the demo starts; `stop_all` ends them by pid, newest first, and waits."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def start(self, name: str, argv: list[str], output_file: Path, stderr: IO[str] | int) -> Child:
        # Own session: a terminal Ctrl-C reaches only us, and we stop the children in order.
        proc = spawn(argv, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT, bufsize=1)
        child = Child(name, proc, output_file)
        self._children.append(child)
        child.start_reader()
        print(f"demo: started {name} (pid {proc.pid})", flush=True)
        return child

    def check_alive(self) -> None:
        for child in self._children:
            if not child.alive():
                raise DemoError(
                    f"{child.name} (pid {child.proc.pid}) exited with code "
                    f"{child.proc.returncode}; its output:\n{child.tail()}"
                )

    def stop(self, child: Child, grace: float = 5.0) -> None:
        """SIGTERM (mitmproxy then runs its `done` hooks), SIGKILL after `grace`; always wait."""
        proc = child.proc
        stop(proc, grace)
        child.join_reader()
        self._children.remove(child)
        print(f"demo: stopped {child.name} (pid {proc.pid}, exit {proc.returncode})")

    def stop_all(self) -> None:
        for child in reversed(list(self._children)):
            self.stop(child)


def wait_until(
    what: str, condition: Callable[[], bool], deadline: float, children: Children
) -> None:
    """Poll `condition` until true; fail when the deadline passes or a child process dies."""
    timeout = max(0.0, deadline - time.monotonic())
    wait_for(condition, timeout, 0.05, what=what, check=children.check_alive, error=DemoError)


def wait_for_line(
    child: Child, pattern: re.Pattern[str], deadline: float, children: Children
) -> re.Match[str]:
    found: list[re.Match[str]] = []

    def seen() -> bool:
        for line in child.snapshot():
            m = pattern.search(line)
            if m:
                found.append(m)
                return True
        return False

    wait_until(f"{child.name} to log {pattern.pattern!r}", seen, deadline, children)
    return found[0]


@dataclass(frozen=True)
class AccessEntry:
    method: str
    path: str
    status: str
    host: str


def read_access_log(path: Path) -> list[AccessEntry]:
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = ACCESS_LINE.search(line)
        if m:
            entries.append(AccessEntry(m["method"], m["path"], m["status"], m["host"]))
    return entries


def headers_requests(path: Path) -> list[AccessEntry]:
    return [e for e in read_access_log(path) if e.method == "GET" and e.path.startswith(PATH)]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def config_for_ports(port_a: int, port_b: int, workdir: Path) -> Path:
    """configs/seed/cluster-a itself, or a copy whose loopback ports are rewritten."""
    if (port_a, port_b) == (DEFAULT_PORT_A, DEFAULT_PORT_B):
        return SEED_A
    copy = workdir / "cluster-a"
    shutil.copytree(SEED_A, copy)
    for name, old, new in (
        ("httpbin.yaml", DEFAULT_PORT_A, port_a),
        ("httpbin-cluster-b.yaml", DEFAULT_PORT_B, port_b),
    ):
        path = copy / name
        text, n = re.subn(rf"(\bhttp:\s*){old}\b", rf"\g<1>{new}", path.read_text("utf-8"))
        if n != 1:
            raise DemoError(f"{SEED_A / name}: expected one `http: {old}` port to rewrite")
        path.write_text(text, "utf-8")
    print(
        f"demo: ports differ from configs/seed (cluster A {port_a}, cluster B {port_b}); "
        f"using a copy of configs/seed/cluster-a with those ports: {copy}"
    )
    return copy


def configured_mirror_percent(config_dir: Path) -> float | None:
    """The first VirtualService rule's mirror percentage (100 when omitted), for the proof line."""
    import yaml

    for path in sorted(config_dir.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text("utf-8")):
            if not isinstance(doc, dict) or doc.get("kind") != "VirtualService":
                continue
            for rule in (doc.get("spec") or {}).get("http") or []:
                if isinstance(rule, dict) and rule.get("mirror"):
                    pct = rule.get("mirrorPercentage")
                    if isinstance(pct, dict) and "value" in pct:
                        return float(pct["value"])
                    if "mirrorPercent" in rule:
                        return float(rule["mirrorPercent"])
                    return 100.0
    return None


def check_proxy_startup(proxy: Child, deadline: float, children: Children) -> None:
    """mitmproxy logs "listening at" before it exits for errors logged during startup."""
    if any(any(sign in line for sign in STARTUP_ERRORS) for line in proxy.snapshot()):
        with contextlib.suppress(DemoError):
            wait_until(
                "the proxy to exit after its startup error",
                lambda: not proxy.alive(),
                deadline,
                Children(),
            )
        raise DemoError(f"{proxy.name} failed to start; its output:\n{proxy.tail(40)}")


def addon_lines(lines: Iterable[str]) -> list[str]:
    """Log records (not traceback continuations) that mention mirrors, minus mitmproxy's own."""
    return [
        line
        for line in lines
        if LOG_RECORD.match(line)
        and ADDON_WORDS.search(line)
        and not any(own in line for own in MITMPROXY_OWN)
    ]


def print_addon_lines(proxy: Child) -> None:
    events = addon_lines(proxy.snapshot())
    if len(events) > 5:
        events = [*events[:2], "...", *events[-3:]]
    print("\nmeshmirror event-log lines on the proxy's stdout:")
    for line in events or ["(none)"]:
        print(f"  {line}")


# --------------------------------------------------------------------------------------------
# The demo.
# --------------------------------------------------------------------------------------------


@dataclass
class Ports:
    a: int
    b: int
    proxy: int
    web: int


def start_httpbin(
    children: Children, name: str, port: int, fallback: bool, workdir: Path, deadline: float
) -> tuple[Child, int, Path]:
    slug = name.split()[1].lower()
    access_log = workdir / f"access-{slug}.log"
    access_log.touch()
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        SERVE_COMMAND,
        "--port",
        str(port),
        "--access-log",
        str(access_log),
    ]
    if fallback:
        argv.append("--fallback")
    stderr = (workdir / f"httpbin-{slug}.stderr").open("w", encoding="utf-8")
    try:
        child = children.start(name, argv, workdir / f"httpbin-{slug}.stdout", stderr)
    finally:
        stderr.close()  # the child holds its own descriptor
    try:
        m = wait_for_line(child, SERVING, deadline, children)
    except DemoError as e:
        err = (workdir / f"httpbin-{slug}.stderr").read_text("utf-8").strip()
        raise DemoError(f"{e}\n    stderr: {err[-2000:]}") from None
    actual = int(m["port"])
    if actual != port and port != 0:
        print(f"demo: port {port} is busy; {name} uses free port {actual} instead")
    return child, actual, access_log


def expected_range(n: int, percent: float | None) -> tuple[int, int] | None:
    """The copies n requests give at `percent` within 3 sigma (binomial), as (low, high)."""
    if percent is None:
        return None
    p = min(1.0, max(0.0, percent / 100))
    mean, sigma = n * p, math.sqrt(n * p * (1 - p))
    return max(0, math.floor(mean - 3 * sigma)), min(n, math.ceil(mean + 3 * sigma))


def send_requests(proxy_port: int, n: int, timeout: float) -> list[tuple[int, bytes]]:
    results: list[tuple[int, bytes]] = []
    conn = http.client.HTTPConnection(LOOPBACK, proxy_port, timeout=timeout)
    try:
        for _ in range(n):
            try:
                conn.request("GET", PATH, headers={"Host": CLIENT_HOST, "Accept": "*/*"})
                resp = conn.getresponse()
                results.append((resp.status, resp.read()))
            except (OSError, http.client.HTTPException) as e:
                conn.close()  # reopened by the next request
                results.append((0, f"{type(e).__name__}: {e}".encode()))
    finally:
        conn.close()
    return results


def print_first_response(status: int, body: bytes) -> None:
    print(f"\nfirst client response: HTTP {status}")
    try:
        text = json.dumps(json.loads(body), indent=2)
    except ValueError:
        text = body.decode("utf-8", "replace")
    print("\n".join(f"  {line}" for line in text.splitlines()))


def run(args: argparse.Namespace, children: Children, workdir: Path) -> int:
    timeout: float = args.timeout
    ports = Ports(
        a=DEFAULT_PORT_A if args.port_a is None else args.port_a,
        b=DEFAULT_PORT_B if args.port_b is None else args.port_b,
        proxy=DEFAULT_PROXY_PORT if args.proxy_port is None else args.proxy_port,
        web=DEFAULT_WEB_PORT if args.web_port is None else args.web_port,
    )

    deadline = time.monotonic() + timeout
    _, ports.a, log_a = start_httpbin(
        children, "cluster A httpbin v1", ports.a, args.port_a is None, workdir, deadline
    )
    _, ports.b, log_b = start_httpbin(
        children, "cluster B httpbin", ports.b, args.port_b is None, workdir, deadline
    )
    config = config_for_ports(ports.a, ports.b, workdir)
    percent = configured_mirror_percent(config)

    if args.proxy_port is None and not port_is_free(ports.proxy):
        print(f"demo: proxy port {ports.proxy} is busy; letting the proxy pick a free one")
        ports.proxy = 0
    envoy = args.engine == "envoy"
    if envoy:
        tool = "meshmirror run --engine envoy"
        argv = envoy_argv(config, ports)
    else:
        tool = "mitmweb" if args.web else "mitmdump"
        argv = mitmproxy_argv(tool, args, config, ports)
    if args.web:
        if args.web_port is None and not port_is_free(ports.web):
            # mitmweb binds a port of its own; which one is read from /proc once it listens.
            ports.web = 0
        argv += [
            "--web-host",
            LOOPBACK,
            "--web-port",
            str(ports.web),
            "--set",
            "web_open_browser=false",
        ]
    print(f"demo: {' '.join(argv)}")
    proxy = children.start(
        f"{tool} (cluster A ingress gateway)", argv, workdir / "proxy.log", subprocess.STDOUT
    )
    deadline = time.monotonic() + timeout
    listening = wait_for_line(proxy, LISTENING, deadline, children)
    ports.proxy = int(listening["port"])
    check_proxy_startup(proxy, deadline, children)
    print(f"demo: proxy (cluster A's ingress gateway) listening at {LOOPBACK}:{ports.proxy}")
    if args.web:
        url = wait_for_line(proxy, WEB_LISTENING, deadline, children)["url"]
        if ports.web == 0:
            # mitmweb prints the configured port (0) in its URL; its web socket is the one
            # that is not the proxy's.
            (ports.web,) = listening_ports(proxy.proc.pid) - {ports.proxy}
            url = url.replace(f"{LOOPBACK}:0/", f"{LOOPBACK}:{ports.web}/", 1)
        print(f"demo: mitmweb UI (the token is in the URL): {url}")

    n: int = args.requests
    print(f"\ndemo: sending {n} x GET {PATH} with Host: {CLIENT_HOST} to {LOOPBACK}:{ports.proxy}")
    results = send_requests(ports.proxy, n, timeout)
    print_first_response(*results[0])
    ok_responses = sum(1 for status, _ in results if status == 200)

    deadline = time.monotonic() + timeout
    with contextlib.suppress(DemoError):
        wait_until(
            f"{n} requests in cluster A's access log",
            lambda: len(headers_requests(log_a)) >= n,
            deadline,
            children,
        )
    wait_for_mirrors(log_b, n, deadline, children)
    served_a = headers_requests(log_a)
    mirrored = headers_requests(log_b)

    hosts_a = sorted({e.host for e in served_a})
    hosts_b = sorted({e.host for e in mirrored})
    share = 100.0 * len(mirrored) / n
    expected = expected_range(n, percent)
    expect = f"the seed mirrors {percent:g}%" if percent is not None else "no mirror configured"
    if expected is not None:
        expect += f"; expected {expected[0]}-{expected[1]} of {n} within 3 sigma"
    print("\nproof (from the access logs, the stand-in for the seed's `kubectl logs`):")
    print(
        f"proof: cluster A (httpbin v1 on {LOOPBACK}:{ports.a}) served {len(served_a)}/{n} "
        f"GET {PATH} requests ({ok_responses}/{n} client responses were 200); "
        f"Host seen: {', '.join(hosts_a) or '-'}"
    )
    print(
        f"proof: cluster B (httpbin on {LOOPBACK}:{ports.b}) received {len(mirrored)} mirrored "
        f"copies of {n} ({share:.0f}%; {expect})"
    )
    print(f"proof: cluster B saw Host: {', '.join(hosts_b) or '-'}")
    for line in [ln for ln in log_b.read_text("utf-8").splitlines() if PATH in ln][:2]:
        print(f"  cluster B access log | {line}")

    problems = []
    if len(served_a) < n or ok_responses < n:
        problems.append(f"cluster A served {len(served_a)}/{n} ({ok_responses} responses 200)")
    if not mirrored:
        problems.append("no mirrored copy reached cluster B")
    elif expected is not None and not expected[0] <= len(mirrored) <= expected[1]:
        problems.append(
            f"{len(mirrored)} of {n} mirrored, outside {expected[0]}-{expected[1]} (3 sigma of "
            f"{percent:g}%)"
        )
    if hosts_b and hosts_b != [SHADOW_HOST]:
        problems.append(f"cluster B saw Host {hosts_b}, expected only {SHADOW_HOST!r}")

    admin = ""
    if envoy:
        admin = wait_for_line(proxy, ENVOY_ADMIN, deadline, children)["admin"]
        completed = f"cluster.{MIRROR_CLUSTER}.upstream_rq_completed"
        # B logs a request before its answer reaches Envoy, which counts it then.
        with contextlib.suppress(DemoError):
            wait_until(
                "Envoy's count of copies to reach cluster B's",
                lambda: envoy_counters(admin).get(completed) == len(mirrored),
                time.monotonic() + 5,
                children,
            )
        counters = envoy_counters(admin)
        print("\nEnvoy's counters for the mirror's cluster (its admin /stats):")
        for name, value in sorted(counters.items()):
            if value:
                print(f"  {name}: {value}")
        if counters.get(completed, 0) != len(mirrored):
            problems.append(
                f"Envoy counted {counters.get(completed, 0)} copies completed, cluster B's log "
                f"shows {len(mirrored)}"
            )
    if args.once:
        # Stopping the proxy first lets the addon log its shutdown summary, shown below.
        children.stop(proxy)
        if not envoy:
            print_addon_lines(proxy)
        if problems:
            print(f"\nproxy output (last lines):\n{proxy.tail()}")
            print(f"demo: FAILED: {'; '.join(problems)}")
            return 1
        print("demo: OK")
        return 0

    if not envoy:
        print_addon_lines(proxy)
    if problems:
        print(f"demo: WARNING: {'; '.join(problems)}")
    base = f"http://{LOOPBACK}:{ports.proxy}"
    print(
        "\nTry it (Ctrl-C stops everything):\n"
        f"  curl -sS -H 'Host: {CLIENT_HOST}' {base}/headers       # served by A, 50% mirrored\n"
        f"  curl -sS -H 'Host: {CLIENT_HOST}' {base}/get           # no rule: A only, no mirror\n"
        f"  tail -f {log_a}\n"
        f'  tail -f {log_b}   # look for host="{SHADOW_HOST}"\n'
        + (
            f"  curl -sS '{admin}/stats?filter=httpbin.mirror'   # Envoy's counters\n"
            if envoy
            else ""
        )
        + "The proxy's output follows:"
    )
    proxy.echo = True
    while True:
        children.check_alive()
        time.sleep(0.5)


def mitmproxy_argv(tool: str, args: argparse.Namespace, config: Path, ports: Ports) -> list[str]:
    """mitmdump (or mitmweb) in reverse mode to cluster A's httpbin with the addon."""
    argv = [
        str(Path(sys.executable).parent / tool),
        "--mode",
        f"reverse:http://{LOOPBACK}:{ports.a}",
        "--listen-host",
        LOOPBACK,
        "-p",
        str(ports.proxy),
        "-s",
        str(args.addon or DEFAULT_ADDON),
        "--set",
        f"mirror_config={config}",
        "--set",
        "flow_detail=0",
        # Reverse mode otherwise rewrites Host to the upstream before any hook runs, and the
        # mirror's Host would no longer be `httpbin-shadow`.
        "--set",
        "keep_host_header=true",
        # One event-log line per mirror outcome, so the demo can show what the addon did.
        "--set",
        "mirror_verbosity=each",
    ]
    if args.seed is not None:
        argv += ["--set", f"mirror_seed={args.seed}"]
    return argv


def envoy_argv(config: Path, ports: Ports) -> list[str]:
    """`meshmirror run --engine envoy`: real Envoy on the export of the same config, cluster A's
    httpbin as the reverse-proxy upstream (what no route claims), its admin on a free port."""
    return [
        str(Path(sys.executable).parent / "meshmirror"),
        "run",
        "--engine",
        "envoy",
        "-f",
        str(config),
        "--primary",
        f"http://{LOOPBACK}:{ports.a}",
        "--listen",
        f"{LOOPBACK}:{ports.proxy}",
        "--admin",
        f"{LOOPBACK}:0",
    ]


def envoy_counters(admin: str) -> dict[str, int]:
    """Envoy's own request counters for the mirror's cluster, from its admin `/stats`."""
    url = f"{admin}/stats?format=json&filter={urllib.parse.quote(MIRROR_STATS)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return {s["name"]: int(s["value"]) for s in json.load(r)["stats"] if "value" in s}


def wait_for_mirrors(log_b: Path, n: int, deadline: float, children: Children) -> None:
    """Wait for the first mirrored copy, then until no new copy arrives for a second.

    Sampling makes the final count unknown, so "done" is "all N arrived or the log went quiet".
    """
    quiet = 1.0
    last_count = -1
    last_change = time.monotonic()

    def settled() -> bool:
        nonlocal last_count, last_change
        count = len(headers_requests(log_b))
        now = time.monotonic()
        if count != last_count:
            last_count, last_change = count, now
        return count >= n or (count > 0 and now - last_change >= quiet)

    with contextlib.suppress(DemoError):
        wait_until("mirrored copies in cluster B's access log", settled, deadline, children)
    children.check_alive()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description=(
            "The seed scenario (configs/seed/cluster-a) on 127.0.0.1: real httpbin servers for "
            "cluster A and cluster B, mitmproxy with the meshmirror addon (or real Envoy: "
            "--engine envoy) as cluster A's ingress gateway, N requests, and the proof that "
            "about 50% were mirrored to cluster B with Host: httpbin-shadow."
        ),
        epilog=(
            "Examples: scripts/demo  |  scripts/demo --once --requests 40  |  scripts/demo --web"
            "  |  scripts/demo --engine envoy"
        ),
    )
    parser.add_argument(
        "--port-a",
        type=int,
        metavar="PORT",
        help=f"cluster A's httpbin v1 (default {DEFAULT_PORT_A}, a free one if busy; 0 = any)",
    )
    parser.add_argument(
        "--port-b",
        type=int,
        metavar="PORT",
        help=f"cluster B's httpbin (default {DEFAULT_PORT_B}, a free one if busy; 0 = any)",
    )
    parser.add_argument(
        "--proxy-port",
        type=int,
        metavar="PORT",
        help=f"the proxy (default {DEFAULT_PROXY_PORT}, a free one if busy; 0 = any)",
    )
    parser.add_argument(
        "--requests", type=int, default=100, metavar="N", help="requests to send (default 100)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="the addon's mirror_seed, for a reproducible sample (default: none, a new draw)",
    )
    parser.add_argument(
        "--once", action="store_true", help="exit after the proof: 0 if it holds, 1 if not"
    )
    parser.add_argument(
        "--engine",
        choices=("mitmproxy", "envoy"),
        default="mitmproxy",
        help="the proxy: mitmdump with the addon, or real Envoy on the same config's export "
        "through `meshmirror run --engine envoy` (default mitmproxy)",
    )
    parser.add_argument(
        "--addon",
        type=Path,
        default=None,
        help="the mitmproxy script to load (default addons/mirror.py)",
    )
    parser.add_argument("--web", action="store_true", help="run mitmweb instead of mitmdump")
    parser.add_argument(
        "--web-port",
        type=int,
        metavar="PORT",
        help=f"mitmweb's UI port with --web (default {DEFAULT_WEB_PORT}, or a free one if busy)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for each phase (startup, requests, mirrors; default 30)",
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the temporary directory with the logs (kept anyway when the demo fails)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="directory for the logs and any config copy (default: a new temporary directory, "
        "removed after a successful run); never removed",
    )
    args = parser.parse_args(argv)
    if args.engine == "envoy":
        for given, flag, why in (
            (args.web, "--web", "mitmweb is mitmproxy's"),
            (args.addon is not None, "--addon", "Envoy loads no mitmproxy script"),
            (args.seed is not None, "--seed", "Envoy draws its samples at random"),
            (args.web_port is not None, "--web-port", "mitmweb is mitmproxy's"),
        ):
            if given:
                parser.error(f"{flag}: not with --engine envoy ({why})")
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    for name in ("port_a", "port_b", "proxy_port", "web_port"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 65535:
            parser.error(f"--{name.replace('_', '-')} must be 0..65535")
    return args


@contextlib.contextmanager
def signals_stop(stopping: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM raise Stop (once); while cleaning up they are ignored."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            raise Stop(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == SERVE_COMMAND:
        return serve_httpbin(argv[1:])
    args = parse_args(argv)
    if args.workdir is not None:
        workdir: Path = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="meshmirror-demo-"))
    children = Children()
    stopping = threading.Event()
    code = 2
    with signals_stop(stopping):
        try:
            code = run(args, children, workdir)
        except Stop as e:
            code = 128 + e.signum
            print(f"\ndemo: {signal.Signals(e.signum).name}: stopping")
        except DemoError as e:
            print(f"demo: ERROR: {e}", file=sys.stderr)
            code = 2
        finally:
            stopping.set()
            children.stop_all()
    if code == 0 and not args.keep_logs and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"demo: logs kept in {workdir}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
