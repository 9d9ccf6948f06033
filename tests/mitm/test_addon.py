"""The addon's hooks with mitmproxy's own test helpers (taddons, tflow): no sockets needed.

The mirror writer is replaced by a recorder here only to observe what the hook hands over; the
real writer is exercised end to end in tests/e2e and tests/test_writer.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons, tflow, tutils

from meshmirror.mirror.sender import ProcessWriter
from meshmirror.mirror.types import MirrorEndpoint, MirrorRequest, MirrorResult
from meshmirror.mitm import liveconfig
from meshmirror.mitm.addon import Mirror
from tests.support.processes import gone

CONFIG = """
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: primary}
spec:
  hosts: [primary.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.2, ports: {http: 8081}}]
---
apiVersion: networking.istio.io/v1beta1
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


class RecordingWriter:
    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.sent: list[tuple[str, MirrorEndpoint, MirrorRequest]] = []
        self.callbacks: list[Callable[[MirrorResult], None]] = []

    def submit(
        self,
        pool_key: str,
        endpoint: MirrorEndpoint,
        request: MirrorRequest,
        on_done: Callable[[MirrorResult], None],
        capture: int = 0,
    ) -> bool:
        if not self.accept:
            return False
        self.sent.append((pool_key, endpoint, request))
        self.callbacks.append(on_done)
        return True

    def inflight(self, pool_key: str | None = None) -> int:
        return 0

    def set_own_addresses(self, addresses: list[tuple[str, int]]) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def config(tmp_path: Path) -> Path:
    p = tmp_path / "vs.yaml"
    p.write_text(CONFIG)
    return p


def make_flow(
    path: str = "/headers", host: str = "app.example.com", body: bytes = b""
) -> tflow.HTTPFlow:
    f = tflow.tflow(
        req=tutils.treq(
            host="127.0.0.1", port=8080, path=path, content=body, headers=[(b"host", host.encode())]
        )
    )
    return f


def test_routes_primary_and_hands_copy_to_writer(config: Path) -> None:
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_config=[str(config)])
        assert tctx.options.keep_host_header is True
        w = RecordingWriter()
        m.writer = w  # type: ignore[assignment]
        f = make_flow(body=b"hello")
        m.request(f)
        assert (f.request.host, f.request.port) == ("127.0.0.2", 8081)
        assert f.request.host_header == "app.example.com"
        assert len(w.sent) == 1
        key, ep, copy = w.sent[0]
        assert key == "outbound|80||shadow.local"
        assert (ep.host, ep.port) == ("127.0.0.3", 9091)
        assert (b"host", b"app.example.com-shadow") in copy.headers
        assert copy.body == b"hello"
        assert copy.target == "/headers"
        # x-request-id added to both so they correlate
        rid = f.request.headers["x-request-id"]
        assert (b"x-request-id", rid.encode()) in copy.headers
        w.callbacks[0](
            MirrorResult(
                status=200, failure=None, detail="", latency=0.01, bytes_sent=10, bytes_received=20
            )
        )
        c = m.stats.cluster(key)
        assert (c.sampled, c.sent) == (1, 1)


def test_zero_percent_rule_and_unmatched_host_are_not_mirrored(config: Path) -> None:
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_config=[str(config)])
        w = RecordingWriter()
        m.writer = w  # type: ignore[assignment]
        m.request(make_flow("/none"))
        f = make_flow("/x", host="other.example.com")
        m.request(f)
        assert (f.request.host, f.request.port) == ("127.0.0.1", 8080)  # untouched
        assert w.sent == []
        # Neither was considered for a copy, each for its reason: a 0% mirror compiles to no
        # mirror policy at all (as in Envoy's route), and no virtual host has the other Host.
        assert m.stats.requests_skipped == {"no_mirror_policy": 1, "no_virtual_host": 1}
        assert "outbound|80||shadow.local" not in m.stats.clusters
        m.request(make_flow("/mirrored"))
        c = m.stats.cluster("outbound|80||shadow.local")
        assert (c.matched, c.sampled, c.share()) == (1, 1, (100.0, 100.0))
        snapshot = json.loads(m.stats_command())
        assert snapshot["requests_not_mirrored"]["no_virtual_host"] == 1
        assert snapshot["clusters"]["outbound|80||shadow.local"]["matched"] == 1


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda f: setattr(f.request, "method", "CONNECT"), "connect"),
        (lambda f: f.request.headers.__setitem__("upgrade", "websocket"), "upgrade"),
        (lambda f: setattr(f.request, "raw_content", b"x" * 5000), "body_too_large"),
        (lambda f: setattr(f, "response", tutils.tresp()), "has_response"),
    ],
    ids=["connect", "upgrade", "too-large", "has-response"],
)
def test_guards_count_skips(
    config: Path, mutate: Callable[[tflow.HTTPFlow], None], reason: str
) -> None:
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_config=[str(config)], mirror_max_body="1k")
        w = RecordingWriter()
        m.writer = w  # type: ignore[assignment]
        f = make_flow()
        mutate(f)
        m.request(f)
        assert w.sent == []
        c = m.stats.cluster("outbound|80||shadow.local")
        assert c.sampled == 1
        assert c.skipped[reason] == 1


def test_overflow_is_counted_as_dropped(config: Path) -> None:
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_config=[str(config)])
        m.writer = RecordingWriter(accept=False)  # type: ignore[assignment]
        m.request(make_flow())
        c = m.stats.cluster("outbound|80||shadow.local")
        assert (c.sampled, c.dropped["overflow"]) == (1, 1)


def test_recorded_flow_is_mirrored_without_rerouting(config: Path) -> None:
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_config=[str(config)])
        w = RecordingWriter()
        m.writer = w  # type: ignore[assignment]
        f = make_flow()
        f.live = False
        f.response = tutils.tresp()
        m.request(f)
        assert len(w.sent) == 1
        assert (f.request.host, f.request.port) == ("127.0.0.1", 8080)


def test_bad_options_and_config_at_startup_are_logged_and_nothing_is_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Before running(): mitmproxy exits on any error logged during startup, so the error lines are
    # logged (no OptionsError, whose traceback would wrap them) and no connection is served.
    m = Mirror()
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.replace("mirrorPercentage: {value: 0}", "mirrorPercentage: {value: 150}"))
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_timeout="soon")
        tctx.configure(m, mirror_max_body="lots")
        tctx.configure(m, mirror_config=[str(bad)])
        tctx.configure(m, mirror_config=[str(tmp_path / "missing.yaml")])
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert errors[0].startswith("meshmirror: mirror_timeout: ")
        assert "invalid size" in errors[1]
        # The lines `meshmirror validate` prints, exactly: located errors, then its verdict.
        (located,) = [e for e in errors if "spec.http[0].mirrorPercentage.value" in e]
        assert located.startswith(f"{bad}:") and not located.startswith("meshmirror")
        assert f"{bad}: INVALID: 1 error(s), 0 warning(s)" in errors
        assert errors[-1] == f"meshmirror: {tmp_path / 'missing.yaml'}: no such file or directory"
        assert m.table is None
        client = tflow.tclient_conn()
        m.client_connected(client)
        assert client.error  # refused until mitmproxy exits


async def test_bad_options_and_config_after_running_raise_options_error(
    tmp_path: Path, config: Path
) -> None:
    # After running() (`set` in mitmproxy's console): OptionsError, and the last good config serves.
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(
            m,
            mirror_config=[str(config)],
            mirror_sender="loop",
            mirror_reload_interval="0",
            mirror_summary_interval="0",
        )
        m.running()
        try:
            with pytest.raises(exceptions.OptionsError, match="mirror_timeout"):
                tctx.configure(m, mirror_timeout="soon")
            with pytest.raises(exceptions.OptionsError, match="invalid size"):
                tctx.configure(m, mirror_max_body="lots")
            bad = tmp_path / "bad.yaml"
            bad.write_text(
                CONFIG.replace("mirrorPercentage: {value: 0}", "mirrorPercentage: {value: 150}")
            )
            with pytest.raises(
                exceptions.OptionsError, match=r"spec\.http\[0\]\.mirrorPercentage\.value"
            ):
                tctx.configure(m, mirror_config=[str(bad)])
            with pytest.raises(exceptions.OptionsError, match="no such file"):
                tctx.configure(m, mirror_config=[str(tmp_path / "missing.yaml")])
            # mitmproxy rolls the option back to the good config, which is loaded again
            assert m.table is not None and m.table.virtual_hosts[0].name == "app.example.com:80"
            # Nothing refuses clients: the hook is not even installed.
            assert getattr(m, "client_connected", None) is None
        finally:
            m.done()


def test_commands_report_stats_and_routes(config: Path) -> None:
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_config=[str(config)])
        m.writer = RecordingWriter()  # type: ignore[assignment]
        m.request(make_flow())
        stats = tctx.master.commands.call("mirror.stats.json")
        assert '"sampled": 1' in stats
        routes = tctx.master.commands.call("mirror.routes.json")
        assert "outbound|80||shadow.local" in routes
        # The table forms: rows of cells, one line each in the console's grid and in mitmweb.
        table = tctx.master.commands.call("mirror.stats")
        assert table[0][:4] == ["mirror cluster", "matched", "sampled", "share (configured)"]
        (row,) = [r for r in table if r[0] == "outbound|80||shadow.local"]
        assert row[1:5] == ["1", "1", "100% (100%)", "0"]
        assert all(len(r) == len(table[0]) for r in table)
        assert all("\n" not in cell for r in table for cell in r)
        assert ["config", "generation 1 (loaded); reloads 0 loaded, 0 rejected"] == (
            [r for r in table if r[0] == "config"][0][:2]
        )
        route_rows = tctx.master.commands.call("mirror.routes")
        assert route_rows[0] == ["virtual host", "route", "match", "destinations", "mirrors"]
        assert any("outbound|80||shadow.local 100%" in r[4] for r in route_rows[1:]), route_rows


def test_reload_command_rejects_a_bad_change_and_loads_a_good_one(config: Path) -> None:
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_config=[str(config)], mirror_reload_interval="0")
        assert m.live.generation == 1
        good = config.read_text()
        config.write_text(good.replace("mirror: {host: shadow.local}", "mirror: {host: 7}", 1))
        out = tctx.master.commands.call("mirror.reload")
        assert out == "config not loaded (see the event log); generation 1"
        assert m.table is not None and m.table.generation == 1  # the last good table serves
        config.write_text(good.replace("app.example.com", "other.example.com"))
        assert tctx.master.commands.call("mirror.reload") == "config loaded; generation 2"
        assert m.table is not None and m.table.generation == 2
        m.writer = RecordingWriter()  # type: ignore[assignment]
        m.request(make_flow(host="other.example.com"))
        assert len(m.writer.sent) == 1  # type: ignore[union-attr]


async def test_a_reload_on_a_running_proxy_loads_off_the_loop_and_swaps_in_on_it(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    real = liveconfig.load_config_set
    hold, release = threading.Event(), threading.Event()

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        if hold.is_set():
            assert release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(liveconfig, "load_config_set", recording)
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(
            m,
            mirror_config=[str(config)],
            mirror_sender="loop",
            mirror_reload_interval="0",
            mirror_summary_interval="0",
        )
        m.running()
        try:
            assert threads == [threading.main_thread()]  # startup: synchronous
            good = config.read_text()
            config.write_text(good.replace("app.example.com", "other.example.com"))
            out = tctx.master.commands.call("mirror.reload")
            assert out.startswith("config reload started; generation 1 serves")
            again = tctx.master.commands.call("mirror.reload")
            assert again.startswith("a config reload is already running")
            task = m._reload_task
            assert task is not None and m.table is not None and m.table.generation == 1
            assert await task is True
            assert threads[1] is not threading.main_thread()
            assert m.table is not None and m.table.generation == 2  # served once swapped in
            assert m.live.reloads == {"loaded": 1, "rejected": 0}

            # A set mirror_config while a reload is loading wins over it.
            copy = config.with_name("copy.yaml")
            copy.write_text(good)
            hold.set()
            task = m._reload_in_background("test")
            assert task is not None
            while len(threads) < 3:
                await asyncio.sleep(0.01)
            hold.clear()
            tctx.configure(m, mirror_config=[str(copy)])  # generation 3
            release.set()
            assert await task is False
            assert m.live.generation == 3 and m.live.reloads == {"loaded": 1, "rejected": 0}
        finally:
            m.done()


def test_an_unexpected_exception_in_a_reload_is_a_rejected_change(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_config=[str(config)], mirror_reload_interval="0")

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("boom")

        monkeypatch.setattr(liveconfig, "load_config_set", broken)
        assert tctx.master.commands.call("mirror.reload").startswith("config not loaded")
        assert m.live.reloads == {"loaded": 0, "rejected": 1}
        assert m.table is not None and m.table.generation == 1


def test_a_config_that_routes_nothing_is_served_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "vs.yaml").write_text(CONFIG)
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_config=[str(cfg)], mirror_reload_interval="0")
        assert json.loads(tctx.master.commands.call("mirror.stats.json"))["config"] == "loaded"
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        (cfg / "vs.yaml").unlink()
        assert tctx.master.commands.call("mirror.reload") == "config loaded; generation 2"
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert f"warning: {cfg}: no YAML file (*.yaml, *.yml) in this directory" in warnings
        (empty,) = [w for w in warnings if "routes nothing" in w]
        assert empty == (
            "meshmirror: mirror.reload: config generation 2 routes nothing (removed "
            "VirtualService default/app): every request now goes to the reverse upstream and "
            "none is mirrored"
        )
        stats = json.loads(tctx.master.commands.call("mirror.stats.json"))
        assert (stats["config"], stats["generation"]) == ("empty", 2)
        assert m.table is not None and m.table.virtual_hosts == ()


async def test_os_chosen_port_is_checked_against_the_mirrors_once_listening(
    config: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # With -p 0 the listen port is known only in running(). The OS cannot be made to pick a
    # given port, so the proxyserver's answer is set to the shadow endpoint of CONFIG here.
    m = Mirror()
    proxyserver = Proxyserver()
    with taddons.context(proxyserver, m) as tctx:
        tctx.configure(
            m,
            listen_port=0,
            mirror_config=[str(config)],
            mirror_sender="loop",
            mirror_reload_interval="0",
            mirror_summary_interval="0",
        )
        assert m.live.listen is None
        monkeypatch.setattr(proxyserver, "listen_addrs", lambda: [("127.0.0.3", 9091)])
        m.running()
        try:
            assert m.fanout.loop_clusters == frozenset({"outbound|80||shadow.local"})
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert any("own listen address 127.0.0.3:9091" in w for w in warnings), warnings
            m.writer = RecordingWriter()  # type: ignore[assignment]
            m.request(make_flow())
            assert m.writer.sent == []  # type: ignore[union-attr]
            assert m.stats.cluster("outbound|80||shadow.local").skipped == {"loop": 1}
        finally:
            m.done()


async def test_done_stops_the_sender_process(config: Path) -> None:
    # mitmproxy calls done() on script reload too: the old addon's sender must not linger.
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        # mitmproxy configures every option at start; here the writer's own are named.
        tctx.configure(
            m, mirror_config=[str(config)], mirror_reload_interval="0", mirror_timeout="5s"
        )
        writer = m.writer
        assert isinstance(writer, ProcessWriter)
        pid = writer.pid
        assert pid is not None
        assert m.done() is None  # nothing in flight: nothing to wait for
        assert writer.pid is None
        assert gone(pid)


CORS_CONFIG = CONFIG.replace(
    "  - route: [{destination: {host: primary.local}}]\n    mirror: {host: shadow.local}\n",
    "  - route: [{destination: {host: primary.local}}]\n    mirror: {host: shadow.local}\n"
    "    corsPolicy: {allowOrigins: [{exact: 'https://a.example'}], allowMethods: [GET]}\n",
)


def test_a_cors_preflight_is_answered_and_never_mirrored(tmp_path: Path) -> None:
    path = tmp_path / "cors.yaml"
    path.write_text(CORS_CONFIG)
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_config=[str(path)])
        w = RecordingWriter()
        m.writer = w  # type: ignore[assignment]
        f = make_flow()
        f.request.method = "OPTIONS"
        f.request.headers["origin"] = "https://a.example"
        f.request.headers["access-control-request-method"] = "GET"
        assert m.request(f) is None
        assert f.response is not None and f.response.status_code == 200
        assert f.response.headers["access-control-allow-origin"] == "https://a.example"
        assert (f.request.host, f.request.port) == ("127.0.0.1", 8080)  # never routed
        assert w.sent == []
        assert m.stats.snapshot({})["requests_not_mirrored"] == {"local_reply": 1}
        # The actual request is routed, mirrored, and its response gets the CORS headers.
        g = make_flow()
        g.request.headers["origin"] = "https://a.example"
        m.request(g)
        assert len(w.sent) == 1 and (g.request.host, g.request.port) == ("127.0.0.2", 8081)
        g.response = tutils.tresp()
        m.responseheaders(g)
        assert g.response.headers["access-control-allow-origin"] == "https://a.example"


def test_default_retries_option(config: Path) -> None:
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_config=[str(config)])
        m.writer = RecordingWriter()  # type: ignore[assignment]
        assert tctx.options.mirror_default_retries == "off"
        # The dump is what the proxy serves: Istio's default retries only once applied.
        assert "retry_policy" not in tctx.master.commands.call("mirror.routes.json")
        assert m.request(make_flow()) is None  # mitmproxy forwards the primary itself
        tctx.configure(m, mirror_default_retries="istio")
        assert m.primary.default_retries is True
        assert "retry_policy" in tctx.master.commands.call("mirror.routes.json")
        f = make_flow()
        pending = m.request(f)
        # The primary is now the addon's own exchange (Istio's default: 2 retries).
        assert pending is not None
        pending.close()  # type: ignore[attr-defined]


def test_default_retries_rejects_other_values_at_startup(
    config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_default_retries="always")
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert errors == [
            "meshmirror: mirror_default_retries: must be one of off, istio (got 'always')"
        ]
        assert m.primary.default_retries is False


def test_verdict_command_judges_the_copies_inspected_so_far(config: Path, tmp_path: Path) -> None:
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_config=[str(config)], mirror_log=str(tmp_path / "o.jsonl"))
        w = RecordingWriter()
        m.writer = w  # type: ignore[assignment]
        empty = tctx.master.commands.call("mirror.verdict", "sampled < 5")
        assert empty[0][0].startswith("no copies inspected yet")
        for _ in range(2):
            f = make_flow()
            m.request(f)
            w.callbacks[-1](MirrorResult(200, None, "", 0.004, 10, 10))
            f.response = tutils.tresp()
            m.inspection.response(f)
        rows = tctx.master.commands.call("mirror.verdict", "sampled < 5", "failed_rate > 50%")
        assert rows[0] == ["verdict", "FAILED"]
        assert rows[1] == [
            "FAIL",
            "default/app[1] -> outbound|80||shadow.local: sampled < 5: 2 < 5",
        ]
        assert rows[2][0] == "ok"
        with pytest.raises(exceptions.CommandError, match="unknown figure"):
            tctx.master.commands.call("mirror.verdict", "speed > 1")


def installed_hooks(m: Mirror) -> set[str]:
    """The flow hooks mitmproxy would find on the addon (it looks them up by name)."""
    names = ("requestheaders", "request", "responseheaders", "response", "error")
    return {n for n in (*names, "client_connected") if getattr(m, n, None) is not None}


def test_only_the_hooks_a_config_needs_are_installed(tmp_path: Path, config: Path) -> None:
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_reload_interval="0")
        assert installed_hooks(m) == set()  # no config: nothing is looked at
        assert not hasattr(m, "addons")  # nor walked into
        tctx.configure(m, mirror_config=[str(config)])
        assert installed_hooks(m) == {"requestheaders", "request"}
        rewriting = tmp_path / "rewriting.yaml"
        rewriting.write_text(
            CONFIG.replace(
                "  - route: [{destination: {host: primary.local}}]\n    mirror:",
                "  - route: [{destination: {host: primary.local}}]\n"
                "    headers: {response: {set: {x-served-by: meshmirror}}}\n    mirror:",
            )
        )
        tctx.configure(m, mirror_config=[str(rewriting)])
        assert installed_hooks(m) == {"requestheaders", "request", "responseheaders"}
        f = make_flow()
        m.request(f)
        f.response = tutils.tresp()
        m.responseheaders(f)
        assert f.response.headers["x-served-by"] == "meshmirror"
        tctx.configure(m, mirror_log=str(tmp_path / "outcomes.jsonl"))
        assert installed_hooks(m) == {
            "requestheaders",
            "request",
            "responseheaders",
            "response",
            "error",
        }
        tctx.configure(m, mirror_log="", mirror_config=[str(config)])
        assert installed_hooks(m) == {"requestheaders", "request"}
        tctx.configure(m, mirror_metrics="127.0.0.1:0")  # the primary's latency is observed
        assert installed_hooks(m) == {"requestheaders", "request", "response", "error"}
        tctx.configure(m, mirror_metrics="", mirror_config=[])
        assert installed_hooks(m) == set()
        m.done()


@pytest.mark.parametrize(
    ("primary_protocol", "upstream_http2", "streams"),
    [
        ("HTTP", False, False),
        ("GRPC", False, True),  # HTTP/2: a gRPC call's response may need passing through
        ("HTTPS", False, True),  # the client's protocol, negotiated with ALPN
        ("HTTP", True, True),  # the reverse-proxy upstream speaks HTTP/2
    ],
    ids=["http1-only", "grpc-port", "https-port", "upstream-http2"],
)
def test_the_response_headers_hook_is_there_when_a_call_may_be_http2(
    tmp_path: Path, primary_protocol: str, upstream_http2: bool, streams: bool
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        CONFIG.replace(
            "protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 127.0.0.2",
            f"protocol: {primary_protocol}}}]\n  resolution: STATIC\n"
            "  endpoints: [{address: 127.0.0.2",
            1,
        )
    )
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_reload_interval="0", mirror_upstream_http2=upstream_http2)
        tctx.configure(m, mirror_config=[str(path)])
        assert ("responseheaders" in installed_hooks(m)) is streams
        m.done()


def test_a_host_no_rule_claims_is_decided_before_any_other_work(config: Path) -> None:
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        tctx.configure(m, mirror_config=[str(config)], mirror_reload_interval="0")
        m.writer = RecordingWriter()  # type: ignore[assignment]
        f = make_flow(host="other.example.com")
        fields = f.request.headers.fields
        assert m.request(f) is None
        # Not routed, not given a request id, no header touched: the request is as it came
        # (what Envoy's connection manager does, edge.py, applies to claimed requests only).
        assert f.request.headers.fields == fields
        assert f.request.host == "127.0.0.1"
        assert m.stats.requests_skipped == {"no_virtual_host": 1}
        # Two Host fields are the joined value mitmproxy sees ("a, b"): claimed by no one.
        g = make_flow()
        g.request.headers.fields = (*g.request.headers.fields, (b"Host", b"app.example.com"))
        assert m.request(g) is None
        assert m.stats.requests_skipped == {"no_virtual_host": 2}
        m.done()
