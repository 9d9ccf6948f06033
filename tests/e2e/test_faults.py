"""The fault matrix end to end: whatever the mirror does, the client gets what it gets without a
mirror, the fault is counted under its class, resources stay bounded and shutdown is prompt.
Also accounting under mixed faults, the circuit breaker, the loop guard, privacy and hostile
requests, all through a real mitmdump and real sockets on 127.0.0.1."""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.support import meshconfig as mc
from tests.support import servers as srv
from tests.support.mitmdump import Proxy, port_in_use, start_proxy
from tests.support.ports import PortTaken, on_picked_port, refused_port, refusing_socket
from tests.support.processes import wait_for, wait_gone
from tests.support.procfs import fds_and_rss

FAST = ("mirror_timeout=500ms", "mirror_verbosity=each", "mirror_summary_interval=0")
OUTCOME_RE = re.compile(r"\bmirror (sent \d+|failed: |dropped: |skipped: )")


def primary_handler(req: Request) -> Response:
    body = f"primary {req.method} {req.full_path} {len(req.get_data())}".encode()
    return Response(body, status=200, headers={"X-Primary": "yes", "Content-Type": "text/x-p"})


@pytest.fixture(scope="module")
def primary() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request("").respond_with_handler(primary_handler)  # type: ignore[arg-type]
    server.start()
    yield server
    server.stop()


def upstream_of(server: HTTPServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def exchange(port: int, i: int) -> tuple[int, bytes, str | None, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        if i % 3 == 0:
            conn.request("POST", f"/r/{i}?i={i}", body=b"x" * (i * 100), headers=HOSTS)
        else:
            conn.request("GET", f"/r/{i}?i={i}", headers=HOSTS)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("X-Primary"), resp.getheader("Content-Type")
    finally:
        conn.close()


HOSTS = {"Host": "app.example.com"}


def run_sequence(
    port: int, n: int, start: int = 0
) -> list[tuple[int, bytes, str | None, str | None]]:
    return [exchange(port, i) for i in range(start, start + n)]


@pytest.fixture(scope="module")
def baseline(primary: HTTPServer, tmp_path_factory: pytest.TempPathFactory) -> list[object]:
    """What the client gets through a proxy with no mirror at all."""
    cfg = mc.mirror_config(tmp_path_factory.mktemp("base") / "c.yaml", primary.port, {})
    proxy = start_proxy(upstream_of(primary), [cfg])
    try:
        return list(run_sequence(proxy.port, 12))
    finally:
        proxy.stop()


def outcome_count(proxy: Proxy) -> int:
    return sum(1 for line in list(proxy.lines) if OUTCOME_RE.search(line))


def waited(proxy: Proxy, cond: Callable[[], object], *more: Proxy, timeout: float = 15) -> None:
    """wait_for, showing the proxies' output when the condition is not met."""
    try:
        wait_for(cond, timeout=timeout)
    except AssertionError as e:
        dumps = "\n----\n".join(p.output[-4000:] for p in (proxy, *more))
        raise AssertionError(f"{e}\n{dumps}") from None


def stop_within(proxy: Proxy, deadline: float = 8.0) -> float:
    t0 = time.monotonic()
    proxy.stop(timeout=deadline + 5)
    elapsed = time.monotonic() - t0
    assert elapsed < deadline, f"shutdown took {elapsed:.1f}s"
    return elapsed


FAULTS: dict[str, tuple[str, str]] = {
    # id: (where the outcome is counted, class)
    "refused": ("failed", "refused"),
    "silent": ("failed", "timeout"),
    "byte-at-a-time": ("failed", "timeout"),
    "reset-mid-response": ("failed", "reset"),
    "garbage": ("failed", "protocol"),
    "huge-body": ("sent", "200"),
    "tls-to-plain-port": ("failed", "tls"),
    "tls-bad-certificate": ("failed", "tls"),
    "unresolvable-name": ("failed", "dns"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_matrix(
    fault: str,
    primary: HTTPServer,
    baseline: list[object],
    tmp_path: Path,
) -> None:
    server: srv.FaultServer | None = None
    protocol, resolution, address, port = "HTTP", "STATIC", "127.0.0.1", 0
    if fault == "refused":
        port = refused_port()
    elif fault == "tls-to-plain-port":
        server, protocol = srv.FaultServer(srv.plain_http_400), "HTTPS"
    elif fault == "tls-bad-certificate":
        server = srv.FaultServer(srv.status(200), tls=srv.self_signed_context(tmp_path))
        protocol = "HTTPS"
    elif fault == "unresolvable-name":
        resolution, address, port = "DNS", "mirror.meshmirror.invalid", 80
    else:
        handler = {
            "silent": srv.silent,
            "byte-at-a-time": srv.drip,
            "reset-mid-response": srv.reset_mid_response,
            "garbage": srv.garbage,
            "huge-body": srv.huge_body,
        }[fault]
        server = srv.FaultServer(handler)
    if server is not None:
        port = server.port
    se = mc.service_entry(
        "shadow", "shadow.local", port, address=address, protocol=protocol, resolution=resolution
    )
    cfg = mc.mirror_config(tmp_path / "c.yaml", primary.port, {"shadow.local": se})
    proxy = start_proxy(upstream_of(primary), [cfg], *FAST, "mirror_breaker_failures=0")
    try:
        got = run_sequence(proxy.port, 12)
        assert got == baseline
        wait_for(lambda: outcome_count(proxy) >= 12, timeout=15)
        fds0, rss0 = fds_and_rss(proxy.proc.pid)
        burst = 40
        for i in range(12, 12 + burst):
            assert exchange(proxy.port, i)[0] == 200
        wait_for(lambda: outcome_count(proxy) >= 12 + burst, timeout=30)
        fds1, rss1 = fds_and_rss(proxy.proc.pid)
        assert fds1 - fds0 <= 10, (fds0, fds1)
        assert rss1 - rss0 < 48 * 1024, (rss0, rss1)  # KiB; a 24 MiB answer is never buffered
        stop_within(proxy)
        counters = mc.last_summary(proxy.lines)["outbound|80||shadow.local"]
        n = 12 + burst
        assert counters["sampled"] == n
        where, cls = FAULTS[fault]
        if where == "sent":
            assert counters["sent"] == n
            assert len(proxy.log_lines(f"mirror sent {cls}")) == n
        elif fault == "unresolvable-name":
            # The system resolver answers NXDOMAIN in ms, but a slow DNS server can outlast
            # mirror_timeout: then the copy is (correctly) a timeout.
            failed = counters["failed"]
            assert set(failed) <= {"dns", "timeout"} and failed.get("dns", 0) > 0, counters  # type: ignore[attr-defined]
        else:
            assert counters["failed"] == {cls: n}, counters
        assert mc.accounted(counters) == n
        assert proxy.proc.returncode in (0, -15)
    finally:
        proxy.stop()
        if server is not None:
            server.close()


# --- accounting under mixed faults, and the circuit breaker ----------------------------------


def test_every_sampled_copy_has_exactly_one_outcome_under_mixed_faults(
    primary: HTTPServer, tmp_path: Path
) -> None:
    answered: list[int] = []

    def counting_200(conn: socket.socket) -> None:
        try:
            while srv.read_request(conn) is not None:
                answered.append(1)
                conn.sendall(b"HTTP/1.1 200 X\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass

    healthy = srv.FaultServer(counting_200)
    failing = srv.FaultServer(srv.status(500))
    silent = srv.FaultServer(srv.silent)
    mirrors = {
        "healthy.local": mc.service_entry("healthy", "healthy.local", healthy.port),
        "refusing.local": mc.service_entry("refusing", "refusing.local", refused_port()),
        "silent.local": mc.service_entry("silent", "silent.local", silent.port),
        "failing.local": mc.service_entry("failing", "failing.local", failing.port),
    }
    cfg = mc.mirror_config(tmp_path / "c.yaml", primary.port, mirrors)
    proxy = start_proxy(
        upstream_of(primary),
        [cfg],
        "mirror_timeout=1s",
        "mirror_verbosity=errors",
        "mirror_summary_interval=0",
        # The silent mirror holds every copy for mirror_timeout and overflows; 8 leaves the
        # healthy one room for a slow round trip (the sender process adds two pipe hops).
        "mirror_max_inflight=8",
        "mirror_breaker_failures=3",  # the refusing mirror opens its circuit
        "mirror_breaker_cooldown=60s",
        "mirror_max_body=1k",  # some POSTs are too large: skipped
    )
    n = 30
    try:
        copied = 0
        for i in range(n):
            assert exchange(proxy.port, i)[0] == 200  # POST bodies: i*100 bytes, >1k from i=12
            if not (i % 3 == 0 and i * 100 > 1024):
                # The healthy mirror's copy has arrived before the next request leaves: on a
                # loaded machine the sender may lag, but never by 8 healthy copies (its cap),
                # while the silent mirror still holds every copy of its for mirror_timeout.
                copied += 1
                wait_for(lambda c=copied: len(answered) >= c, 10, what="the healthy copy")
        time.sleep(1.5)  # past mirror_timeout: every copy has finished (or been cancelled)
        stop_within(proxy)
    finally:
        proxy.stop()
        for s in (healthy, failing, silent):
            s.close()
    summary = mc.last_summary(proxy.lines)
    c = {h.split(".")[0]: summary[f"outbound|80||{h}"] for h in mirrors}
    for name, counters in c.items():
        assert counters["sampled"] == n, (name, counters)
        assert mc.accounted(counters) == n, (name, counters)
    too_large = sum(1 for i in range(n) if i % 3 == 0 and i * 100 > 1024)
    assert c["healthy"]["sent"] == n - too_large, c["healthy"]
    assert c["healthy"]["skipped"] == {"body_too_large": too_large}
    assert c["failing"]["sent"] == n - too_large  # a 500 is an answer: sent, not failed
    # The circuit opens on the 3rd refusal; copies already on their way to the sender by then
    # fail too, so at least 3 are refused and every other copy is dropped as circuit_open.
    refused = cast(dict[str, int], c["refusing"]["failed"])
    assert set(refused) == {"refused"} and 3 <= refused["refused"] < n - too_large, refused
    assert c["refusing"]["dropped"] == {"circuit_open": n - too_large - refused["refused"]}
    assert c["silent"]["dropped"]["overflow"] > 0
    assert sum(c["silent"]["failed"].values()) >= 2  # type: ignore[attr-defined]
    assert proxy.log_lines("mirror circuit closed -> open cluster=outbound|80||refusing.local")


def _sender_children(pid: int) -> list[int]:
    """The mirror sender processes mitmdump started (its children running sender_worker)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []
    out = []
    for child in children:
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"meshmirror.mirror.worker" in f.read():
                    out.append(child)
        except FileNotFoundError:
            pass
    return out


def test_one_sender_process_runs_beside_mitmdump_and_ends_with_it(
    primary: HTTPServer, tmp_path: Path
) -> None:
    silent = srv.FaultServer(srv.silent)
    cfg = mc.mirror_config(
        tmp_path / "c.yaml",
        primary.port,
        {"silent.local": mc.service_entry("silent", "silent.local", silent.port)},
    )
    proxy = start_proxy(upstream_of(primary), [cfg], "mirror_timeout=2s")
    try:
        # Started with the proxy, before any copy (its cmdline shows once it has exec'd).
        wait_for(lambda: _sender_children(proxy.proc.pid), timeout=5)
        senders = _sender_children(proxy.proc.pid)
        assert len(senders) == 1, senders
        for i in range(5):
            assert exchange(proxy.port, i)[0] == 200  # copies held by the silent mirror
        assert _sender_children(proxy.proc.pid) == senders
        stop_within(proxy)  # at exit the held copies get mirror_timeout + 1 s, then are cancelled
    finally:
        proxy.stop()
        silent.close()
    assert wait_gone(senders[0], 5), "the sender process outlived mitmdump"


def test_circuit_half_opens_after_cooldown_and_probe_closes_it(
    primary: HTTPServer, tmp_path: Path
) -> None:
    closed = refusing_socket()
    port = closed.getsockname()[1]
    cfg = mc.mirror_config(
        tmp_path / "c.yaml",
        primary.port,
        {"flaky.local": mc.service_entry("flaky", "flaky.local", port)},
    )
    proxy = start_proxy(
        upstream_of(primary),
        [cfg],
        *FAST,
        "mirror_breaker_failures=2",
        "mirror_breaker_cooldown=1s",
    )
    server: srv.FaultServer | None = None
    try:
        for i in range(4):
            exchange(proxy.port, i)
        wait_for(lambda: proxy.log_lines("closed -> open"), timeout=10)
        # Copies 3 and 4 may have left before the second refusal came back; this one cannot.
        exchange(proxy.port, 4)
        wait_for(lambda: proxy.log_lines("mirror dropped: circuit_open"), timeout=10)
        # The mirror comes back on the same port (the refusing socket starts to listen); after
        # the cool-down one probe closes it.
        server = srv.FaultServer(srv.status(200), sock=closed)
        time.sleep(1.1)
        exchange(proxy.port, 10)
        wait_for(lambda: proxy.log_lines("open -> half_open"), timeout=10)
        wait_for(lambda: proxy.log_lines("half_open -> closed"), timeout=10)
        exchange(proxy.port, 11)
        wait_for(lambda: len(proxy.log_lines("mirror sent 200")) >= 2, timeout=10)
    finally:
        proxy.stop()
        if server is not None:
            server.close()
        else:
            closed.close()


# --- loop guard -------------------------------------------------------------------------------


def test_mirror_to_own_listen_address_is_refused_at_startup(
    primary: HTTPServer, tmp_path: Path
) -> None:
    # The listen port must be in the config before mitmdump starts, so it is picked up front.
    def attempt(port: int) -> tuple[int, Proxy]:
        cfg = mc.mirror_config(
            tmp_path / "c.yaml",
            primary.port,
            {"self.local": mc.service_entry("self", "self.local", port)},
        )
        proxy = start_proxy(
            f"{upstream_of(primary)}@{port}", [cfg], expect_failure=True, ready_timeout=30
        )
        if port_in_use(proxy.output):
            raise PortTaken(port)
        return port, proxy

    own, proxy = on_picked_port(attempt)
    cfg = tmp_path / "c.yaml"
    assert proxy.proc.returncode != 0
    out = proxy.output
    assert f"mirror endpoint 127.0.0.1:{own}" in out
    assert "own listen address" in out
    assert f"{cfg}:" in out and "VirtualService default/app" in out
    assert "spec.http[0].mirrors[0]" in out


def _loopback_name() -> str | None:
    """A name other than `localhost` that resolves to loopback here: the machine's own name
    (/etc/hosts maps it to 127.0.0.1 on most Linux installs), else another /etc/hosts alias."""
    candidates = [socket.gethostname()]
    with contextlib.suppress(OSError), open("/etc/hosts") as f:
        for line in f:
            parts = line.split("#", 1)[0].split()
            if parts and parts[0].startswith("127."):
                candidates += parts[1:]
    for name in candidates:
        if name.lower().rstrip(".") in ("localhost", "localhost.localdomain") or "." in name:
            continue
        with contextlib.suppress(OSError):
            if {a[4][0] for a in socket.getaddrinfo(name, 80)} & {"127.0.0.1"}:
                return name
    return None


LOOPBACK_NAME = _loopback_name()
needs_loopback_name = pytest.mark.skipif(
    LOOPBACK_NAME is None, reason="no name but localhost resolves to 127.0.0.1 on this machine"
)


@needs_loopback_name
def test_mirror_endpoint_name_resolving_to_own_listen_address_is_refused_at_startup(
    primary: HTTPServer, tmp_path: Path
) -> None:
    name = LOOPBACK_NAME

    def attempt(port: int) -> tuple[int, Proxy]:
        se = mc.service_entry("self", "self.local", port, address=name, resolution="DNS")
        cfg = mc.mirror_config(tmp_path / "c.yaml", primary.port, {"self.local": se})
        proxy = start_proxy(
            f"{upstream_of(primary)}@{port}", [cfg], expect_failure=True, ready_timeout=30
        )
        if port_in_use(proxy.output):
            raise PortTaken(port)
        return port, proxy

    own, proxy = on_picked_port(attempt)
    assert proxy.proc.returncode != 0, proxy.output[-2000:]
    out = proxy.output
    assert f"mirror endpoint {name}:{own}" in out, out[-2000:]
    assert "resolves to this proxy's own listen address" in out
    assert "VirtualService default/app" in out and "spec.http[0].mirrors[0]" in out


@needs_loopback_name
def test_a_reload_pointing_a_name_at_the_proxys_own_port_is_rejected(
    primary: HTTPServer, tmp_path: Path, proxies: Callable[..., Proxy]
) -> None:
    """Hot reloads are checked against the actual listen address, names resolved."""
    # The port is the OS's choice (-p 0): the proxy starts clean, then a reload points at it.
    cfg = mc.mirror_config(tmp_path / "c.yaml", primary.port, {})
    proxy = proxies(upstream_of(primary), [cfg], *FAST, "mirror_reload_interval=100ms")
    se = mc.service_entry(
        "self", "self.local", proxy.port, address=str(LOOPBACK_NAME), resolution="DNS"
    )
    mc.mirror_config(tmp_path / "c.yaml", primary.port, {"self.local": se})
    waited(proxy, lambda: proxy.log_lines("config change rejected"))
    assert proxy.log_lines("resolves to this proxy's own listen address")


def test_two_proxies_mirroring_to_each_other_do_not_loop(
    primary: HTTPServer, tmp_path: Path
) -> None:
    b_dir = tmp_path / "b"
    b_dir.mkdir()

    # B's config names A's listen port before A starts, so that port is picked up front.
    def start_pair(port_a: int) -> tuple[Proxy, Proxy]:
        # B serves app.example.com (and its shadow host) from the primary and mirrors back to A.
        cfg_b = mc.mirror_config(
            b_dir / "c.yaml",
            primary.port,
            {"a.local": mc.service_entry("a", "a.local", port_a)},
            hosts="[app.example.com, app.example.com-shadow]",
        )
        b = start_proxy(upstream_of(primary), [cfg_b], *FAST)
        cfg_a = mc.mirror_config(
            tmp_path / "a.yaml",
            primary.port,
            {"b.local": mc.service_entry("b", "b.local", b.port)},
        )
        try:
            return start_proxy(f"{upstream_of(primary)}@{port_a}", [cfg_a], *FAST), b
        except AssertionError as e:
            b.stop()
            if port_in_use(str(e)):
                raise PortTaken(port_a) from e
            raise

    a, b = on_picked_port(start_pair)
    try:
        before = len(primary.log)
        n = 10
        for i in range(n):
            assert exchange(a.port, i)[0] == 200
        waited(a, lambda: len(a.log_lines("mirror sent 200")) >= n, b)
        waited(b, lambda: len(b.log_lines("mirror skipped: loop")) >= n)
        time.sleep(0.5)
        # n primaries through A, n copies served by B's primary; nothing else.
        assert len(primary.log) - before == 2 * n
        assert len(b.log_lines("mirror sent")) == 0
    finally:
        a.stop()
        b.stop()


# --- privacy ---------------------------------------------------------------------------------


SECRET_AUTH = "Bearer s3cr3t-token-AAAA"
SECRET_COOKIE = "session=c00kie-secret-BBBB"


@pytest.mark.parametrize(
    "verbosity", ["mirror_verbosity=each", "termlog_verbosity=debug"], ids=["each", "debug"]
)
def test_secrets_are_redacted_on_the_copy_and_never_logged(
    verbosity: str, primary: HTTPServer, tmp_path: Path
) -> None:
    mirror = HTTPServer(host="127.0.0.1", port=0)
    mirror.expect_request("").respond_with_data("m")
    mirror.start()
    cfg = mc.mirror_config(
        tmp_path / "c.yaml",
        primary.port,
        {"shadow.local": mc.service_entry("shadow", "shadow.local", mirror.port)},
    )
    proxy = start_proxy(
        upstream_of(primary),
        [cfg],
        *({verbosity, "mirror_verbosity=each"}),  # a repeated --set key would void them all
        "mirror_redact_headers=Authorization",
        "mirror_redact_headers=Cookie=mask",
    )
    try:
        before = len(primary.log)
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        conn.request(
            "GET",
            "/private",
            headers={**HOSTS, "Authorization": SECRET_AUTH, "Cookie": SECRET_COOKIE},
        )
        assert conn.getresponse().status == 200
        conn.close()
        waited(proxy, lambda: len(mirror.log) == 1)
        copy = mirror.log[0][0]
        assert "Authorization" not in copy.headers
        assert copy.headers["Cookie"] == "[redacted]"
        assert copy.headers["x-meshmirror-shadow"] == "1"
        original = primary.log[before][0]
        assert original.headers["Authorization"] == SECRET_AUTH
        assert original.headers["Cookie"] == SECRET_COOKIE
        wait_for(lambda: proxy.log_lines("mirror sent 200"), timeout=10)
        proxy.stop()
        out = proxy.output
        assert "s3cr3t" not in out and "c00kie" not in out
    finally:
        proxy.stop()
        mirror.stop()


# --- hostile requests -------------------------------------------------------------------------


def raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks += chunk
                if b"\r\n\r\n" in chunks and _complete(chunks):
                    break
        except TimeoutError:
            pass
        return chunks


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return True


def req(target: str, host: str | None = "app.example.com", extra: str = "") -> bytes:
    host_line = "" if host is None else f"Host: {host}\r\n"
    return f"GET {target} HTTP/1.1\r\n{host_line}{extra}Connection: close\r\n\r\n".encode()


HOSTILE: dict[str, bytes] = {
    "header-without-colon": req("/public/a", extra="this is not a header\r\n"),
    "huge-header": req("/public/a", extra="X-Big: " + "b" * 200_000 + "\r\n"),
    "many-headers": req("/public/a", extra="".join(f"X-H{i}: v\r\n" for i in range(2000))),
    "nul-in-header": req("/public/a", extra="X-Nul: a\x00b\r\n"),
    "empty-host": req("/public/a", host=""),
    "no-host": req("/public/a", host=None),
    "userinfo-host": req("/public/a", host="user:pw@app.example.com"),
    "ipv6-host": req("/public/a", host="[::1]:8080"),
    "trailing-dot-host": req("/public/a", host="app.example.com."),
    "uppercase-host": req("/public/a", host="APP.EXAMPLE.COM"),
    "absolute-form": req("http://app.example.com/public/a"),
    "asterisk-form": b"OPTIONS * HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    "long-query": req("/public/a?q=" + "x" * 60_000),
    "dotdot-escape": req("/public/../admin"),
    "encoded-dotdot": req("/public/%2e%2e/admin"),
    "encoded-letters": req("/%70ublic/a"),
    "backslash": req("/admin\\..\\public\\a"),
    "bad-percent": req("/public/%zz%"),
    "garbage-request-line": b"\x16\x03\x01 not http at all\r\n\r\n",
    "bad-method": b"G\x01T /public/a HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
}


@pytest.fixture(scope="module")
def hostile_proxy(
    primary: HTTPServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Proxy, HTTPServer]]:
    mirror = HTTPServer(host="127.0.0.1", port=0)
    mirror.expect_request("").respond_with_data("m")
    mirror.start()
    tmp = tmp_path_factory.mktemp("hostile")
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: [app.example.com]
  http:
  - match: [{uri: {prefix: /public/}}]
    route: [{destination: {host: primary.local}}]
    mirror: {host: shadow.local}
  - route: [{destination: {host: primary.local}}]
"""
    path = tmp / "c.yaml"
    path.write_text(
        mc.service_entry("primary", "primary.local", primary.port).strip()
        + "\n---\n"
        + mc.service_entry("shadow", "shadow.local", mirror.port).strip()
        + "\n---\n"
        + vs.strip()
        + "\n"
    )
    proxy = start_proxy(upstream_of(primary), [path], *FAST)
    yield proxy, mirror
    proxy.stop()
    mirror.stop()


# Where matching must (True) or must not (False) mirror, by Istio's BASE path normalisation.
MIRRORED = {
    "dotdot-escape": False,
    "encoded-dotdot": False,
    "encoded-letters": True,
    "backslash": True,
    "long-query": True,
    "uppercase-host": True,
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_requests_never_hurt_the_proxy(
    case: str, hostile_proxy: tuple[Proxy, HTTPServer], primary: HTTPServer
) -> None:
    proxy, mirror = hostile_proxy
    copies_before = len(mirror.log)
    primaries_before = len(primary.log)
    answer = raw(proxy.port, HOSTILE[case])
    assert proxy.proc.poll() is None, proxy.output[-3000:]
    if answer:
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1."), answer[:200]
        code = int(status_line.split()[1])
        if code == 200:
            assert b"primary " in answer  # the primary's answer, never something else
        else:
            assert 400 <= code < 600  # mitmproxy's own error for what it cannot parse
    if case in MIRRORED:
        assert answer.split(b" ", 2)[1] == b"200", answer[:200]
        raw_target = HOSTILE[case].split(b" ")[1].decode()
        assert primary.log[primaries_before][0].environ["RAW_URI"] == raw_target
        if MIRRORED[case]:
            wait_for(lambda: len(mirror.log) > copies_before, timeout=10)
        else:
            time.sleep(0.3)
            assert len(mirror.log) == copies_before
    # Still serving normally afterwards.
    assert exchange(proxy.port, 1)[0] == 200


def test_forwarded_path_is_never_normalised(
    hostile_proxy: tuple[Proxy, HTTPServer], primary: HTTPServer
) -> None:
    proxy, mirror = hostile_proxy
    before, copies = len(primary.log), len(mirror.log)
    raw(proxy.port, req("/%70ublic/./a"))
    wait_for(lambda: len(mirror.log) > copies, timeout=10)
    assert primary.log[before][0].environ["RAW_URI"] == "/%70ublic/./a"
    assert mirror.log[copies][0].environ["RAW_URI"] == "/%70ublic/./a"
