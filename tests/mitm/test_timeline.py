"""mitm/timeline.py without a proxy: the markers in a chain, the collector's pauses, the lines."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

from mitmproxy.test import tflow, tutils

from meshmirror.mirror.types import MirrorResult
from meshmirror.mitm.timeline import RECORD_KEY, Timeline


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_markers_go_first_and_last_and_leave_with_close(tmp_path: Path) -> None:
    chain: list[Any] = ["a", "b"]
    t = Timeline(str(tmp_path / "t.jsonl"))
    t.install(chain)
    assert chain[1:3] == ["a", "b"] and len(chain) == 4
    start, end = chain[0], chain[-1]
    f = tflow.tflow(req=tutils.treq(headers=[(b"X-Request-Id", b"r-1, r-2")]))
    start.request(f)
    end.request(f)
    f.response = tutils.tresp()
    start.response(f)
    end.response(f)
    end.response(f)  # a second response event does not write a second line
    t.close()
    assert chain == ["a", "b"]
    # A collection during the test adds a "gc" line (more likely with a larger suite loaded).
    (line,) = [x for x in lines(tmp_path / "t.jsonl") if x["kind"] != "gc"]
    assert line["kind"] == "request"
    assert line["id"] == "r-1" and line["status"] == 200
    events = line["events"]
    assert isinstance(events, dict)
    assert events["request"][0] <= events["request"][1] <= events["response"][0]
    assert RECORD_KEY in f.metadata


def test_the_collectors_pauses_are_lines_of_their_own(tmp_path: Path) -> None:
    t = Timeline(str(tmp_path / "t.jsonl"))
    t.install([])
    gc.collect()
    t.close()
    assert t._gc not in gc.callbacks
    collections = [line for line in lines(tmp_path / "t.jsonl") if line["kind"] == "gc"]
    assert collections and collections[-1]["generation"] == 2
    assert all(float(str(c["ms"])) >= 0 for c in collections)


def test_a_copy_line_names_its_stages_and_leaves_out_the_missing(tmp_path: Path) -> None:
    t = Timeline(str(tmp_path / "t.jsonl"))
    result = MirrorResult(None, "refused", "", 0.01, 0, 0, times=(2.0, 3.0, 0.0, 0.0, 5.0))
    t.copy_done("r-1", "outbound|80||m", 1.0, "failed", result)
    t.copy_not_sent("r-2", "outbound|80||m", "dropped", "circuit_open")
    t.close()
    failed, dropped = lines(tmp_path / "t.jsonl")
    assert failed == {
        "kind": "copy",
        "id": "r-1",
        "cluster": "outbound|80||m",
        "outcome": "failed",
        "status": None,
        "submit": 1.0,
        "handoff": 2.0,
        "received": 3.0,
        "written": None,
        "first_byte": None,
        "done": 5.0,
    }
    assert (dropped["outcome"], dropped["reason"], dropped["submit"]) == (
        "dropped",
        "circuit_open",
        dropped["done"],
    )
