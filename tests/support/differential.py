"""The differential suite's machinery: the same config set served by meshmirror (mitmdump with the
addon) and by real Envoy (its `meshmirror envoy` export), the same requests sent to both, and
what the client and every backend saw compared request by request.

- `prepare`: a copy of a config set whose endpoint ports are recording backends of our own (a
  port in `REFUSED_PORTS` stays refused, one in `SLOW_PORTS` answers after `SLOW_SECONDS`), with
  every mirror share, fault share and weight forced to 0 or 100 so that each request has one
  expected outcome.
- `corpus`: requests generated from the compiled route table: each route's match and its near
  misses (another method, a header or query parameter missing or wrong, the path's case, a
  trailing slash, a port in Host, an unknown host), plus bodies, HEAD, repeated headers and
  client-sent X-Request-Id and X-Forwarded-For.
- `observe`: send the corpus to one proxy, wait (polling the proxy's own counters: Envoy's admin
  stats, meshmirror's Prometheus exposition) until every copy has finished, and collect per
  request the client's answer and every request each backend received.
- `normalise` / `differences`: the comparison, after the short normalisation below.

Normalisation (the README lists the same): header names compared in lower case, repeated
fields joined with ","; hop-by-hop and framing fields (Connection, Keep-Alive,
Transfer-Encoding, Content-Length) not compared; fields only Envoy adds (`ENVOY_ONLY`) and only
meshmirror adds (`MESHMIRROR_ONLY`) dropped; an X-Request-Id the proxy generated compared by
presence only (each proxy draws its own).
"""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshmirror.pipeline import load_config_set
from meshmirror.routing.matchers import RouteMatcher, StringMatcher
from meshmirror.routing.table import RouteTable
from tests.support.ports import refused_port
from tests.support.processes import wait_for
from tests.support.servers import FaultServer

# Ports in a config that stand for a refusing or a slow backend (the feature matrix uses them).
REFUSED_PORTS = range(29900, 29950)
SLOW_PORTS = range(29950, 30000)
SLOW_SECONDS = 2.0
CASE_HEADER = "x-diff-case"
CLIENT_ADDRESS = "127.0.0.2"  # not 127.0.0.1: Envoy treats that one address apart in XFF

# Fields only one proxy adds to what it forwards; the README's normalisation list.
ENVOY_ONLY = frozenset(
    {
        "x-envoy-internal",  # on copies (Envoy's own requests are internal)
        "x-envoy-expected-rq-timeout-ms",  # routes with a timeout: the router's own deadline
    }
)
MESHMIRROR_ONLY = frozenset({"x-meshmirror-shadow"})  # the loop guard's marker on copies
# What Envoy's connection manager adds to every request, which meshmirror adds only to requests
# a virtual host claims (the rest go to the reverse-proxy upstream as they came; Envoy without
# the export's catch-all would answer them 404).
CONNECTION_MANAGER = frozenset({"x-forwarded-proto", "x-forwarded-for", "x-envoy-external-address"})
FRAMING = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "te"})


# --- backends -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One request a backend received."""

    backend: str
    method: str
    target: str
    fields: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.fields if n == name]
        return ",".join(values) if values else None


class Backend:
    """A keep-alive HTTP/1.1 server that records every request (chunked bodies included) and
    answers `200` with its name (or after SLOW_SECONDS, for a slow one)."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        self.name = name
        self.delay = delay
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self.server = FaultServer(self._serve)
        self.port = self.server.port

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        reader = conn.makefile("rb")
        for _ in range(10_000):
            got = _read_request(reader)
            if got is None:
                return
            method, target, fields, body = got
            with self._lock:
                self.received.append(Received(self.name, method, target, fields, body))
            if self.delay:
                time.sleep(self.delay)
            reply = f"{self.name} {method} {target}\n".encode()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s"
                % (len(reply), b"" if method == "HEAD" else reply)
            )

    def close(self) -> None:
        self.server.close()


def _read_request(
    reader: Any,
) -> tuple[str, str, tuple[tuple[str, str], ...], bytes] | None:
    line = reader.readline(65536)
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    fields: list[tuple[str, str]] = []
    while True:
        h = reader.readline(65536)
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.decode("latin-1").partition(":")
        fields.append((name.strip().lower(), value.strip()))
    body = b""
    if any(n == "transfer-encoding" and "chunked" in v.lower() for n, v in fields):
        while True:
            size = int(reader.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while reader.readline(65536) not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += reader.read(size)
            reader.readline(16)
    else:
        length = next((int(v) for n, v in fields if n == "content-length"), 0)
        body = reader.read(length) if length else b""
    return method, target, tuple(fields), body


# --- the config set -----------------------------------------------------------------------------


@dataclass
class Prepared:
    """A config set rewritten for the suite, and its backends by name."""

    directory: Path
    backends: dict[str, Backend] = field(default_factory=dict)
    upstream: Backend | None = None

    def all_received(self) -> list[Received]:
        out: list[Received] = []
        for b in [*self.backends.values(), *([self.upstream] if self.upstream else [])]:
            out.extend(b.received)
        return out

    def reset(self) -> None:
        for b in [*self.backends.values(), *([self.upstream] if self.upstream else [])]:
            b.received.clear()

    def close(self) -> None:
        for b in [*self.backends.values(), *([self.upstream] if self.upstream else [])]:
            b.close()


def prepare(source: Path, target: Path, *, force_shares: bool = True) -> Prepared:
    """Copy the YAML of `source` to `target` with each endpoint port replaced by a backend of
    ours (named after the original port), and (`force_shares`) every share forced to 0/100."""
    target.mkdir(parents=True, exist_ok=True)
    prepared = Prepared(target)
    ports: dict[int, int] = {}

    def port_for(original: int) -> int:
        if original not in ports:
            if original in REFUSED_PORTS:
                ports[original] = refused_port()
            else:
                delay = SLOW_SECONDS if original in SLOW_PORTS else 0.0
                b = Backend(f"b{original}", delay)
                prepared.backends[b.name] = b
                ports[original] = b.port
        return ports[original]

    for path in sorted(source.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        for doc in docs:
            _rewrite_ports(doc, port_for)
            if force_shares:
                _force_shares(doc)
        (target / path.name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    prepared.upstream = Backend("upstream")
    return prepared


def _rewrite_ports(doc: dict[str, Any], port_for: Callable[[int], int]) -> None:
    spec = doc.get("spec") or {}
    kind = doc.get("kind")
    if kind == "ServiceEntry":
        for ep in spec.get("endpoints") or ():
            ep_ports = ep.get("ports") or {}
            for name, number in list(ep_ports.items()):
                ep_ports[name] = port_for(int(number))
    elif kind == "WorkloadEntry":
        we_ports = spec.get("ports") or {}
        for name, number in list(we_ports.items()):
            we_ports[name] = port_for(int(number))


def _all_or_nothing(value: Any) -> int:
    return 100 if float(value or 0) > 0 else 0


def _force_shares(doc: dict[str, Any]) -> None:
    spec = doc.get("spec") or {}
    if doc.get("kind") == "VirtualService":
        for rule in spec.get("http") or ():
            if "mirrorPercentage" in rule:
                rule["mirrorPercentage"] = {
                    "value": _all_or_nothing(rule["mirrorPercentage"].get("value"))
                }
            if "mirrorPercent" in rule:
                rule["mirrorPercent"] = _all_or_nothing(rule["mirrorPercent"])
            for m in rule.get("mirrors") or ():
                if "percentage" in m:
                    m["percentage"] = {"value": _all_or_nothing(m["percentage"].get("value"))}
            fault = rule.get("fault") or {}
            for kind in ("delay", "abort"):
                f = fault.get(kind)
                if f and "percentage" in f:
                    f["percentage"] = {"value": _all_or_nothing(f["percentage"].get("value"))}
                if f and "percent" in f:
                    f["percent"] = _all_or_nothing(f["percent"])
            dests = rule.get("route") or ()
            if len(dests) > 1:
                heaviest = max(range(len(dests)), key=lambda i: dests[i].get("weight") or 0)
                for i, d in enumerate(dests):
                    d["weight"] = 100 if i == heaviest else 0
    elif doc.get("kind") == "HTTPRoute":
        for rule in spec.get("rules") or ():
            refs = rule.get("backendRefs") or ()
            if len(refs) > 1:
                heaviest = max(range(len(refs)), key=lambda i: refs[i].get("weight", 1))
                for i, ref in enumerate(refs):
                    ref["weight"] = 1 if i == heaviest else 0
            for f in rule.get("filters") or ():
                mirror = f.get("requestMirror")
                if mirror is not None:
                    share = mirror.pop("fraction", None)
                    on = share is None or share.get("numerator", 0) > 0
                    if "percent" in mirror:
                        on = mirror["percent"] > 0
                    mirror["percent"] = 100 if on else 0


# --- the corpus ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One request of the corpus; `id` goes with it as the x-diff-case header."""

    id: str
    method: str
    host: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    source: str = CLIENT_ADDRESS
    claimed: bool = True  # False: a Host no virtual host of the config claims

    @property
    def sent_request_id(self) -> bool:
        return any(n.lower() == "x-request-id" for n, _ in self.headers)


def sample_host(domain: str) -> str:
    if domain == "*":
        return "anything.example"
    if domain.startswith("*"):
        return "a" + domain[1:]
    if domain.endswith("*"):
        return domain[:-1] + "example"
    return domain


def sample_string(m: StringMatcher) -> str:
    """A value the matcher accepts (for a regex: a guess, checked; "" when none found)."""
    if m.kind == "exact":
        return m.value
    if m.kind == "prefix":
        return m.value + "x"
    if m.kind == "present":
        return "1"
    for guess in _regex_guesses(m.value):
        if m.test(guess):
            return guess
    return ""


def _regex_guesses(rx: str) -> Iterator[str]:
    text = rx.removeprefix("^").removesuffix("$")
    yield text
    simple = re.sub(r"\\d[+*]?|\[0-9\][+*]?", "1", text)
    simple = re.sub(r"\.\*|\.\+|\[\^/\]\+|\[\^/\]\*", "x", simple)
    simple = re.sub(r"\(\?:|\(|\)", "", simple)
    simple = re.sub(r"\|.*", "", simple)
    yield simple.replace("\\", "")
    yield simple.replace("\\", "").replace("?", "")


def sample_path(m: RouteMatcher) -> str | None:
    if m.path_kind == "path":
        return m.path_value
    if m.path_kind == "prefix":
        return m.path_value + ("x" if m.path_value.endswith("/") else "/x")
    if m.path_kind == "path_separated_prefix":
        return m.path_value + "/x"
    guess = sample_string(StringMatcher("regex", m.path_value, lambda v: _full(m, v)))
    return guess or None


def _full(m: RouteMatcher, value: str) -> bool:
    from meshmirror.routing.request_view import RequestView

    view = RequestView.of(
        method="GET", scheme="http", authority="h", path=value, headers={}, port=80
    )
    return m._path_test(view)


def corpus(table: RouteTable, *, prefix: str = "") -> list[Case]:
    """Each route's match and its near misses, then the request-level variations."""
    cases: list[Case] = []
    n = 0

    def add(
        method: str,
        host: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        source: str = CLIENT_ADDRESS,
        claimed: bool = True,
    ) -> None:
        nonlocal n
        n += 1
        cases.append(
            Case(f"{prefix}{n}", method, host, path, tuple(headers), body, source, claimed)
        )

    first_host = ""
    for vh in table.virtual_hosts:
        host = sample_host(vh.domains[0])
        first_host = first_host or host
        for route in vh.routes:
            m = route.matcher
            path = sample_path(m)
            if path is None:
                continue
            method = "GET"
            headers: list[tuple[str, str]] = []
            for h in m.headers:
                if h.name == ":method":
                    method = sample_string(h.match) or "GET"
                elif h.name == ":authority":
                    host = sample_string(h.match) or host
                elif h.name.startswith(":") or h.invert or h.unsupported:
                    continue
                else:
                    headers.append((h.name, sample_string(h.match)))
            query = "&".join(f"{q.name}={sample_string(q.match)}" for q in m.query_params)
            full = path + (f"?{query}" if query else "")
            add(method, host, full, headers)  # the match
            add("POST", host, full, headers, b'{"k": "v"}')  # another method, a body
            add("HEAD", host, full, headers)
            add(method, f"{host}:8000", full, headers)  # a port in Host
            add(method, host.upper(), full, headers)
            add(method, host, full.upper(), headers)  # the path's case
            if not path.endswith("/"):
                add(method, host, path + "/" + (f"?{query}" if query else ""), headers)
            for i in range(len(headers)):  # a header missing, or wrong
                add(method, host, full, headers[:i] + headers[i + 1 :])
                add(
                    method,
                    host,
                    full,
                    [*headers[:i], (headers[i][0], "zz-other"), *headers[i + 1 :]],
                )
            if route.cors is not None:  # a preflight and a request, allowed or not
                for origin in ("https://ok.example", "https://no.example"):
                    add(
                        "OPTIONS",
                        host,
                        full,
                        [
                            ("origin", origin),
                            ("access-control-request-method", "POST"),
                            ("access-control-request-headers", "x-a"),
                        ],
                    )
                    add(method, host, full, [*headers, ("origin", origin)])
            if m.query_params:
                add(method, host, path, headers)
                add(method, host, path + "?" + query.replace("=", "=zz", 1), headers)
    host = first_host or "anything.example"
    add("GET", "unknown.invalid", "/headers", [], claimed=False)  # no virtual host claims it
    add("GET", host, "/headers", [("x-request-id", "client-id-1")])
    add("GET", host, "/headers", [("x-forwarded-for", "10.1.1.1"), ("x-forwarded-for", "10.2.2.2")])
    add("GET", host, "/headers", [("x-forwarded-for", "10.3.3.3")], source="127.0.0.1")
    add("GET", host, "/headers", [], source="127.0.0.1")  # Envoy: an internal request
    add("GET", host, "/headers", [("x-multi", "a"), ("x-multi", "b")])
    add("PUT", host, "/anything", [("content-type", "application/octet-stream")], bytes(range(256)))
    return cases


# --- sending and observing ----------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    location: str | None
    content_type: str | None
    cors: tuple[tuple[str, str], ...] = ()  # the access-control-* response fields


def send(port: int, case: Case, timeout: float = 15.0) -> Answer:
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(case.source, 0)
    )
    try:
        conn.putrequest(case.method, case.path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", case.host)
        conn.putheader(CASE_HEADER, case.id)
        for name, value in case.headers:
            conn.putheader(name, value)
        if case.body:
            conn.putheader("Content-Length", str(len(case.body)))
        conn.endheaders(case.body or None)
        resp = conn.getresponse()
        body = resp.read()
        cors = tuple(
            sorted(
                (n.lower(), v)
                for n, v in resp.getheaders()
                if n.lower().startswith("access-control-")
            )
        )
        return Answer(
            resp.status, body, resp.getheader("location"), resp.getheader("content-type"), cors
        )
    except (OSError, http.client.HTTPException) as e:
        return Answer(0, f"{type(e).__name__}".encode(), None, None)
    finally:
        conn.close()


def envoy_quiet(admin: str) -> bool:
    """Envoy has no request in flight or pending on any cluster, nor downstream."""
    with urllib.request.urlopen(f"{admin}/stats?format=json", timeout=10) as r:
        import json

        stats = json.loads(r.read())["stats"]
    busy = 0
    for s in stats:
        name = s.get("name", "")
        if name.endswith((".upstream_rq_active", ".upstream_rq_pending_active")) or (
            name == "http.meshmirror.downstream_rq_active"  # not the admin's own request
        ):
            busy += int(s.get("value", 0))
    return busy == 0


def meshmirror_quiet(metrics_port: int) -> bool:
    """Every sampled copy has an outcome and none is in flight (meshmirror's exposition)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()

    def total(pattern: str) -> float:
        return sum(float(v) for v in re.findall(rf"^{pattern}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    sampled = total("meshmirror_copies_sampled_total")
    done = sum(
        total(f"meshmirror_copies_{k}_total") for k in ("sent", "failed", "dropped", "skipped")
    )
    return total("meshmirror_copies_in_flight") == 0 and sampled == done


def send_repeated(port: int, host: str, path: str, n: int, prefix: str) -> list[int]:
    """`n` GETs of `path` with `host`, one after another on a keep-alive connection (a new one
    after an error), the i-th with case id `PREFIX-i`; returns the statuses (0: no answer)."""
    statuses: list[int] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        for i in range(n):
            try:
                conn.request("GET", path, headers={"Host": host, CASE_HEADER: f"{prefix}-{i}"})
                resp = conn.getresponse()
                resp.read()
                statuses.append(resp.status)
            except (OSError, http.client.HTTPException):
                conn.close()
                statuses.append(0)
    finally:
        conn.close()
    return statuses


def within_sigmas(count: int, n: int, share: float, sigmas: float) -> bool:
    """`count` successes of `n` draws at `share` lie within `sigmas` binomial standard
    deviations of the mean (a share of 0 or 1 leaves no room at all)."""
    return abs(count - n * share) <= sigmas * (n * share * (1 - share)) ** 0.5


@dataclass
class Observation:
    answers: dict[str, Answer]
    received: dict[str, list[Received]]


def wait_quiet(prepared: Prepared, quiet: Callable[[], bool]) -> None:
    """Until the proxy says its copies are done and the backends agree: nothing new arrives
    across two polls of its counters."""

    def settled() -> bool:
        before = len(prepared.all_received())
        if not quiet():
            return False
        time.sleep(0.05)  # between two polls of the counters, not a wait for a copy
        return quiet() and len(prepared.all_received()) == before

    wait_for(settled, 60, 0.05, what="the proxy's copies to finish")


def observe(
    port: int, cases: list[Case], prepared: Prepared, quiet: Callable[[], bool]
) -> Observation:
    """Send every case, wait until the proxy says its copies are done (and the backends agree:
    nothing new arrives across two polls), collect what each backend received per case."""
    prepared.reset()
    answers = {c.id: send(port, c) for c in cases}
    wait_quiet(prepared, quiet)
    received: dict[str, list[Received]] = {c.id: [] for c in cases}
    for r in prepared.all_received():
        case = r.header(CASE_HEADER)
        if case in received:
            received[case].append(r)
    return Observation(answers, received)


# --- comparing ----------------------------------------------------------------------------------


def normalise(r: Received, case: Case) -> tuple[Any, ...]:
    joined: dict[str, list[str]] = {}
    for name, value in r.fields:
        if name in FRAMING or name in ENVOY_ONLY or name in MESHMIRROR_ONLY:
            continue
        if not case.claimed and name in CONNECTION_MANAGER:
            continue
        joined.setdefault(name, []).append(value)
    headers = {n: ",".join(v) for n, v in joined.items()}
    if not case.sent_request_id:
        # Each proxy draws its own; meshmirror draws one only for requests a route claims.
        headers.pop("x-request-id", None)
    digest = hashlib.sha256(r.body).hexdigest()[:16]
    return (r.backend, r.method, r.target, tuple(sorted(headers.items())), digest)


def differences(case: Case, envoy: Observation, mitm: Observation) -> list[str]:
    out: list[str] = []
    a, b = envoy.answers[case.id], mitm.answers[case.id]
    for what, x, y in (
        ("status", a.status, b.status),
        ("body", a.body, b.body),
        ("location", a.location, b.location),
        ("cors", a.cors, b.cors),
    ):
        if x != y:
            out.append(f"{what}: envoy {x!r} != meshmirror {y!r}")
    ea = sorted(normalise(r, case) for r in envoy.received[case.id])
    eb = sorted(normalise(r, case) for r in mitm.received[case.id])
    if ea != eb:
        only_envoy = [r for r in ea if r not in eb]
        only_mitm = [r for r in eb if r not in ea]
        out.append(f"backends: only envoy {only_envoy}; only meshmirror {only_mitm}")
    return out


def describe(case: Case) -> str:
    extra = f" {list(case.headers)}" if case.headers else ""
    return f"{case.id}: {case.method} {case.host}{case.path}{extra} from {case.source}"


def load_table(directory: Path) -> RouteTable:
    cs = load_config_set([str(directory)])
    assert cs.table is not None, [d.format() for d in cs.errors]
    return cs.table
