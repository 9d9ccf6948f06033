"""What a client or a mirror sends never reaches a terminal raw, and JUnit stays well-formed.

A real mitmdump compares a real primary with a hostile mirror whose JSON keys hold escape
sequences, a right-to-left override and newlines that would forge whole lines; the client's
X-Request-Id carries escapes too. Then:
- mitmdump's `mirror mismatch` line shows them escaped, on one line;
- `meshmirror report` (text) prints them escaped, so no forged line appears in its output;
- a route name with control characters is warned about by `meshmirror validate`, and the JUnit
  file `report --junit` writes parses as XML 1.0 (Python's expat).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import meshconfig as mc
from tests.support.mitmdump import Proxy
from tests.support.processes import wait_for
from tests.support.servers import FaultServer, by_path

MESHMIRROR = [sys.executable, "-m", "meshmirror"]
# Keys of the mirror's answer: each, printed raw, would act on a terminal or forge a line.
HOSTILE_KEYS = (
    "\x1b[2J\x1b[31mred",
    "\u202egnp.exe",
    "x\n[12:00:00.000] FORGED mirror sent 200 rule=forged cluster=x",
    "y\n\nverdict:\nFORGED ok verdict PASSED\u2028FORGED",
)
REQUEST_ID = "rid-\x1b]0;title\x07-\u202e-\x85-end"


def answer_with(body: bytes) -> Callable[[socket.socket], None]:
    return by_path(lambda _: (b"Content-Type: application/json\r\n", body))


def raw_request(port: int, request_id: str) -> bytes:
    """One GET with a raw X-Request-Id (bytes no stdlib client sends); the response."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"GET /items HTTP/1.1\r\nHost: app.example.com\r\nX-Request-Id: "
            + request_id.encode("utf-8")
            + b"\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def unsafe(text: str) -> list[str]:
    """Characters a terminal may act on rather than show (newlines between lines excepted)."""
    return [
        c
        for c in text
        if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")
    ]


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_mirror_and_client_text_is_escaped_in_log_lines_and_the_report(
    tmp_path: Path, proxies: Callable[..., Proxy]
) -> None:
    primary = FaultServer(answer_with(b'{"a": 1}'))
    hostile = {"a": 1, **{k: 2 for k in HOSTILE_KEYS}}
    mirror = FaultServer(answer_with(json.dumps(hostile).encode()))
    try:
        cfg = mc.mirror_config(
            tmp_path / "mesh.yaml",
            primary.port,
            {"shadow.local": mc.service_entry("shadow", "shadow.local", mirror.port)},
        )
        log = tmp_path / "outcomes.jsonl"
        proxy = proxies(
            f"http://127.0.0.1:{primary.port}", [cfg], "mirror_compare=true", f"mirror_log={log}"
        )
        response = raw_request(proxy.port, REQUEST_ID)
        assert response.startswith(b"HTTP/1.1 200") and response.endswith(b'{"a": 1}')
        wait_for(lambda: records(log), timeout=15, what="the outcome record")
        wait_for(lambda: proxy.log_lines("mirror mismatch"), timeout=15, what="the mismatch line")
    finally:
        primary.close()
        mirror.close()
    (record,) = records(log)
    assert record["request_id"] == REQUEST_ID  # the record keeps it exactly (JSON-escaped)
    assert len(record["comparison"]["fields"]) == len(HOSTILE_KEYS)
    assert log.read_text().isascii()

    out = proxy.output
    assert unsafe(out) == [], unsafe(out)
    (line,) = proxy.log_lines("mirror mismatch")
    assert "request_id=rid-\\x1b]0;title\\x07-\\u202e-\\x85-end " in line, line
    assert "\\x1b[2J\\x1b[31mred" in line and "\\u202egnp.exe" in line, line
    for text in out.splitlines():
        assert "FORGED" not in text.partition("] ")[2][:6], text  # no line begins with it

    report = subprocess.run(
        [*MESHMIRROR, "report", str(log), "--fail-on", "mismatch_rate > 1%"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 1, report.stdout + report.stderr
    assert unsafe(report.stdout) == [], unsafe(report.stdout)
    assert not [x for x in report.stdout.splitlines() if x.lstrip().startswith("FORGED")]
    assert "\\x1b[2J\\x1b[31mred" in report.stdout and "\\u202egnp.exe" in report.stdout
    assert "\\x1b]0;title\\x07" in report.stdout  # the request id of the example
    verdict = report.stdout.split("\nverdict:\n", 1)[1].splitlines()
    assert len(verdict) == 1 and verdict[0].lstrip().startswith("FAIL"), verdict


def test_a_route_name_with_control_characters_is_warned_about_and_junit_stays_xml(
    tmp_path: Path, proxies: Callable[..., Proxy]
) -> None:
    primary = FaultServer(answer_with(b'{"v": 1}'))
    mirror = FaultServer(answer_with(b'{"v": 2}'))
    try:
        cfg = mc.mirror_config(
            tmp_path / "mesh.yaml",
            primary.port,
            {"shadow.local": mc.service_entry("shadow", "shadow.local", mirror.port)},
        )
        # An http route name as YAML can spell it: ESC, SOH, a form feed and a NUL.
        text = cfg.read_text().replace(
            "  - route:", '  - name: "evil\\e[31m\\x01\\f\\0name"\n    route:'
        )
        cfg.write_text(text)
        check = subprocess.run(
            [*MESHMIRROR, "validate", str(cfg)], capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, check.stdout + check.stderr
        (warning,) = [x for x in check.stdout.splitlines() if "control character" in x]
        assert "spec.http[0].name" in warning and "\\x1b" in warning, warning
        assert unsafe(check.stdout) == []

        log = tmp_path / "outcomes.jsonl"
        proxy = proxies(
            f"http://127.0.0.1:{primary.port}", [cfg], "mirror_compare=true", f"mirror_log={log}"
        )
        assert raw_request(proxy.port, "rid-1").startswith(b"HTTP/1.1 200")
        wait_for(lambda: records(log), timeout=15, what="the outcome record")
    finally:
        primary.close()
        mirror.close()
    (record,) = records(log)
    assert record["rule"] == "default/app[0:evil\x1b[31m\x01\x0c\x00name]"
    junit = tmp_path / "verdict.xml"
    report = subprocess.run(
        [*MESHMIRROR, "report", str(log), "--fail-on", "mismatch_rate > 1%", "--junit", str(junit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 1, report.stdout + report.stderr
    assert unsafe(report.stdout) == []
    suite = ET.parse(junit).getroot()  # expat: XML 1.0, as CI's JUnit readers parse it
    (case,) = suite.iter("testcase")
    assert case.get("classname") == "default/app[0:evil\\x1b[31m\\x01\\x0c\\x00name]"
    (failure,) = case.iter("failure")
    assert "mismatch_rate > 1%" in (failure.get("message") or "")
