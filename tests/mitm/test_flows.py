"""flows.py and the inspection join: mirror flows in the view (bounded), in a flow file, and the
primary-versus-copy join in either order."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mitmproxy import io
from mitmproxy.addons.view import View
from mitmproxy.test import taddons, tflow, tutils

from meshmirror.mirror.types import MirrorEndpoint, MirrorRequest, MirrorResult
from meshmirror.mitm.flows import (
    MIRROR_FLOW_MARK,
    MirrorFlows,
    build_mirror_flow,
    pairing_key,
    settle_mirror_flow,
)
from meshmirror.mitm.inspection import Inspection
from meshmirror.mitm.probes import Probe
from meshmirror.mitm.request_path import COPY_MARK
from meshmirror.outcomes.comparer import Comparer
from meshmirror.outcomes.counters import Outcome, classify

REQ = MirrorRequest(
    "POST",
    "/items?x=1",
    [(b"host", b"app-shadow"), (b"x-request-id", b"rid-1"), (b"x-meshmirror-shadow", b"1")],
    b"payload",
)
EP = MirrorEndpoint("127.0.0.1", 9999)
OK = MirrorResult(
    201, None, "", 0.012, 100, 60, ((b"Content-Type", b"application/json"),), b'{"v": 2}'
)
FAILED = MirrorResult(None, "refused", "connection refused", 0.001, 0, 0)


def settle(probe: Probe, result: MirrorResult) -> None:
    probe.settle(*classify(result.status, result.failure), result)


def inspection() -> Inspection:
    """An Inspection whose comparisons run on a thread (the comparison process is the e2e
    tests'), so that `compared` can wait for them."""
    insp = Inspection()
    insp.comparer = Comparer(use_process=False)
    return insp


async def compared(insp: Inspection) -> None:
    """Until the comparisons submitted so far are recorded."""
    await insp.comparer.drain(10.0)


def test_marker_matches_the_addon() -> None:
    assert MIRROR_FLOW_MARK == COPY_MARK


def mirror_flow(
    result: MirrorResult | None, comment: str = "c", started: float = 1000.0, original: Any = None
) -> Any:
    f = build_mirror_flow(
        original=original or tflow.tflow(),
        request=REQ,
        endpoint=EP,
        started=started,
        comment="in flight",
    )
    settle_mirror_flow(f, result, "dropped: overflow", comment)
    return f


def test_mirror_flow_holds_the_copy_as_sent_and_the_shadow_response() -> None:
    original = tflow.tflow()
    original.timestamp_created = 1000.0
    f = mirror_flow(OK, original=original)
    assert f.marked == ":left_right_arrow:" and f.is_replay == "request" and f.comment == "c"
    assert (f.request.method, f.request.host, f.request.port) == ("POST", "127.0.0.1", 9999)
    assert f.request.path == "/items?x=1" and f.request.headers["host"] == "app-shadow"
    # Its URL is where it went, not the shadow Host with the endpoint's port.
    assert f.request.pretty_url == "http://127.0.0.1:9999/items?x=1"
    assert f.request.pretty_host == "127.0.0.1"
    assert f.request.raw_content == b"payload"
    assert f.response is not None and f.response.status_code == 201
    assert f.response.headers["content-type"] == "application/json"
    assert f.response.raw_content == b'{"v": 2}'
    assert f.response.timestamp_end == pytest.approx(1000.012)
    assert f.metadata == {MIRROR_FLOW_MARK: True, "meshmirror.original": original.id}
    # Listed right after its original, before anything created later.
    assert 1000.0 < f.timestamp_created < 1000.001
    failed = mirror_flow(FAILED)
    assert failed.response is None and failed.error is not None
    assert failed.error.msg == "refused: connection refused"
    never_sent = mirror_flow(None)
    assert never_sent.error is not None and never_sent.error.msg == "dropped: overflow"


async def test_view_keeps_at_most_max_mirror_flows(tmp_path: Path) -> None:
    view = View()
    with taddons.context(view):
        sink = MirrorFlows()
        record = tmp_path / "shadow.mitm"
        sink.configure("auto", 3, str(record))
        assert sink.mode == "view"  # a view exists: auto means view
        for i in range(5):
            sink.publish(mirror_flow(OK, comment=f"#{i}", started=float(i)))
        assert [f.comment for f in view] == ["#2", "#3", "#4"]
        sink.close()
    with open(record, "rb") as fo:
        back = list(io.FlowReader(fo).stream())
    assert [f.comment for f in back] == [f"#{i}" for i in range(5)]
    assert all(f.marked == ":left_right_arrow:" and f.is_replay == "request" for f in back)


async def test_auto_is_off_without_a_view() -> None:
    with taddons.context():
        sink = MirrorFlows()
        sink.configure("auto", 10, "")
        assert sink.mode == "off" and not sink.wanted


# --- the join ------------------------------------------------------------------------------------


def route(vs: str = "default/app") -> Any:
    return SimpleNamespace(label=f"{vs}[0]", virtual_service=vs)


POLICY: Any = SimpleNamespace(cluster=SimpleNamespace(name="outbound|80||shadow.local"))
EPT: Any = SimpleNamespace(address="127.0.0.1", port=9999)


def primary_flow(body: bytes = b'{"v": 1}', status: int = 201, live: bool = True) -> Any:
    f = tflow.tflow(
        req=tutils.treq(headers=((b"x-request-id", b"rid-1"),)),
        resp=tutils.tresp(
            status_code=status, headers=((b"content-type", b"application/json"),), content=body
        ),
        live=live,
    )
    return f


@pytest.mark.parametrize("primary_first", [True, False], ids=["primary-first", "copy-first"])
async def test_join_in_either_order_logs_compares_and_comments(
    tmp_path: Path, primary_first: bool
) -> None:
    insp = inspection()
    log_path = tmp_path / "o.jsonl"
    with taddons.context(insp) as tctx:
        tctx.configure(insp, mirror_log=str(log_path), mirror_compare=True)
        f = primary_flow()
        response = f.response
        f.response = None
        probe = insp.probe(f, route(), POLICY, EPT, EP, REQ, 3, "rid-1")
        assert probe is not None and probe.capture == 256 * 1024
        if primary_first:
            f.response = response
            insp.response(f)
            assert not log_path.read_text()
            settle(probe, OK)
        else:
            settle(probe, OK)
            assert not log_path.read_text()  # waits for the primary
            f.response = response
            insp.response(f)
        await compared(insp)
        (line,) = log_path.read_text().splitlines()
        rec = json.loads(line)
        assert rec["outcome"] == "sent" and rec["request_id"] == "rid-1"
        assert (rec["primary_status"], rec["shadow_status"], rec["generation"]) == (201, 201, 3)
        assert rec["comparison"]["fields"] == ["body:/v"]
        assert "mirror outbound|80||shadow.local: sent 201" in f.comment
        assert "mismatch: body:/v" in f.comment
        assert insp.snapshot() == {"default/app[0] outbound|80||shadow.local": {"mismatched": 1}}
        assert not insp._pending


async def test_recorded_flow_and_annotations_and_not_sent(tmp_path: Path) -> None:
    insp = inspection()
    log_path = tmp_path / "o.jsonl"
    with taddons.context(insp) as tctx:
        tctx.configure(insp, mirror_log=str(log_path), mirror_compare_ignore_json=["/v"])
        vs = SimpleNamespace(
            kind="VirtualService",
            ref="default/app",
            source="cfg.yaml",
            obj=SimpleNamespace(
                metadata=SimpleNamespace(
                    annotations={
                        "meshmirror.io/compare": "true",
                        "meshmirror.io/compare-ignore-json": "/w",
                    }
                )
            ),
        )
        insp.set_resources([vs])  # type: ignore[list-item]
        assert insp.compare_for(route()).enabled
        assert not insp.compare_for(route("default/other")).enabled
        f = primary_flow(body=b'{"v": 1, "w": 1}', live=False)  # recorded: response present
        probe = insp.probe(f, route(), POLICY, EPT, EP, REQ, 1, "rid-1")
        assert probe is not None
        settle(probe, MirrorResult(201, None, "", 0.01, 1, 1, OK.headers, b'{"v": 2, "w": 3}'))
        await compared(insp)
        insp.not_sent(f, route(), POLICY, EPT, Outcome.SKIPPED, "body_too_large", 1, "rid-1")
        recs = [json.loads(x) for x in log_path.read_text().splitlines()]
        assert recs[0]["comparison"] == {"match": True} and recs[0]["replay"] is True
        assert (recs[1]["outcome"], recs[1]["reason"]) == ("skipped", "body_too_large")


async def test_primary_that_never_answers_is_swept() -> None:
    insp = Inspection()
    with taddons.context(insp) as tctx:
        tctx.configure(insp, mirror_compare=True)
        f = primary_flow()
        f.response = None
        probe = insp.probe(f, route(), POLICY, EPT, EP, REQ, 1, "rid-1")
        assert probe is not None
        settle(probe, OK)
        assert insp._pending
        insp.sweep(float("inf"))
        assert not insp._pending
        assert insp.snapshot() == {"default/app[0] outbound|80||shadow.local": {"not_compared": 1}}


async def test_the_original_is_marked_and_names_its_mirror_flows() -> None:
    view = View()
    insp = Inspection()
    with taddons.context(view, insp) as tctx:
        tctx.configure(insp, mirror_flows="view")
        f = primary_flow()
        f.timestamp_created = 1000.0
        view.add([f])
        later = primary_flow()
        later.timestamp_created = 1000.001
        view.add([later])
        probe = insp.probe(f, route(), POLICY, EPT, EP, REQ, 1, "rid-1")
        assert probe is not None
        # In the view while in flight, right after its original (not after `later`).
        (copy,) = [x for x in view if x.metadata.get(MIRROR_FLOW_MARK)]
        assert [x.id for x in view] == [f.id, copy.id, later.id]
        assert copy.response is None and copy.error is None and "in flight" in copy.comment
        assert f.marked == ":black_small_square:"
        key = pairing_key(f.id)
        assert f.comment == f"~comment {key} lists this flow and its copies"
        insp.response(f)
        settle(probe, OK)
        assert [x for x in view if x.metadata.get(MIRROR_FLOW_MARK)] == [copy]  # updated
        assert copy.response is not None and copy.response.status_code == 201
        assert f.comment.splitlines() == [
            f"~comment {key} lists this flow and its copies",
            f"mirror outbound|80||shadow.local: sent 201 in 12.0ms (mirror flow {copy.id})",
        ]
        assert copy.comment.startswith(f"mirror of flow {f.id} (default/app[0]): sent 201")
        assert key in copy.comment  # `~comment KEY` lists the pair
        # Both carry the request id: `~hq "x-request-id: rid-1"` lists the pair too.
        assert [x.id for x in view if x.request.headers.get("x-request-id") == "rid-1"][:2] == [
            f.id,
            copy.id,
        ]
        # A mark the user set is kept.
        g = primary_flow()
        g.marked = ":star:"
        view.add([g])
        probe = insp.probe(g, route(), POLICY, EPT, EP, REQ, 1, "rid-1")
        assert probe is not None
        insp.response(g)
        settle(probe, OK)
        assert g.marked == ":star:"
