from __future__ import annotations

import pytest

from meshmirror.outcomes.counters import MAX_FIELD, MirrorStats, Outcome, classify, format_outcome


def line(host: str, **kw: str) -> str:
    fields = {"rule": "default/app[0]", "cluster": "c", "endpoint": "127.0.0.1:80", **kw}
    return format_outcome(
        outcome=Outcome.SENT,
        shadow_host=host,
        status=200,
        latency=0.001,
        generation=3,
        **fields,
    )


def test_plain_fields_are_written_as_they_are() -> None:
    assert line("app-shadow:8000") == (
        "mirror sent 200 rule=default/app[0] cluster=c endpoint=127.0.0.1:80"
        " host=app-shadow:8000 latency=1.0ms gen=3"
    )


def test_userinfo_is_removed_from_the_host() -> None:
    assert " host=app-shadow " in line("user:hunter2@app-shadow")
    assert " host=app-shadow:81 " in line("a@b:c@app-shadow:81")
    assert "hunter2" not in line("user:hunter2@app-shadow")


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("app\rmirror sent 200 rule=FORGED", "app\\x0dmirror\\x20sent\\x20200\\x20rule=FORGED"),
        ("a\nb", "a\\x0ab"),
        ("a\x1b[31mred", "a\\x1b[31mred"),
        ("a\x00b\x7f", "a\\x00b\\x7f"),
        ("a\u202eb\u2028c\x85", "a\\u202eb\\u2028c\\x85"),
        ("a\udcffb", "a\\xffb"),  # a byte that was not UTF-8, as mitmproxy decodes it
        ("a\\x0d", "a\\\\x0d"),  # a literal backslash cannot pass for an escape
        ("bücher-shadow", "bücher-shadow"),
    ],
)
def test_control_characters_are_escaped(host: str, shown: str) -> None:
    text = line(host)
    assert f" host={shown} " in text
    assert not any(c in text for c in "\r\n\x1b\x00\x7f\x85\u2028\u202e")


def test_every_field_is_bounded() -> None:
    text = line("h" * 60_000, rule="r" * 1000, cluster="c" * 1000, endpoint="\n" * 1000)
    for key in ("rule", "cluster", "endpoint", "host"):
        value = text.split(f" {key}=", 1)[1].split(" ", 1)[0]
        assert len(value) == MAX_FIELD and value.endswith("...")
    assert len(text) < 5 * MAX_FIELD


def test_reason_keeps_its_spaces_but_not_controls() -> None:
    text = format_outcome(
        outcome=Outcome.FAILED,
        rule="r",
        cluster="c",
        endpoint="e",
        shadow_host="",
        reason="protocol (bad\r\nstatus line)",
    )
    assert text.startswith("mirror failed: protocol (bad\\x0d\\x0astatus line) rule=r ")
    assert " host=- " in text


@pytest.mark.parametrize(
    ("status", "failure", "expected"),
    [
        (500, None, (Outcome.SENT, None)),
        (None, "reset", (Outcome.FAILED, "reset")),
        (None, None, (Outcome.FAILED, "other")),
        # Never sent: the connection reached the proxy itself.
        (None, "loop", (Outcome.SKIPPED, "loop")),
    ],
)
def test_classify(
    status: int | None, failure: str | None, expected: tuple[Outcome, str | None]
) -> None:
    assert classify(status, failure) == expected


def test_resent_copies_are_counted_and_summarised() -> None:
    stats = MirrorStats()
    c = stats.cluster("outbound|80||shadow")
    c.sampled, c.sent, c.resent = 2, 2, 1
    assert stats.snapshot()["clusters"]["outbound|80||shadow"]["resent"] == 1
    assert stats.snapshot()["total"]["resent"] == 1
    assert "sent=2 resent=1" in stats.summary_line()


def test_the_share_sampled_is_shown_beside_the_configured_one() -> None:
    stats = MirrorStats()
    c = stats.cluster("outbound|80||shadow")
    c.matched, c.expected, c.sampled, c.sent = 400, 200.0, 191, 191
    other = stats.cluster("outbound|80||other")
    other.matched, other.expected, other.sampled = 100, 10.0, 9
    assert "outbound|80||shadow: matched=400 sampled=191 (47.8%, configured 50%) sent=191" in (
        stats.summary_line()
    )
    snap = stats.snapshot()
    assert snap["clusters"]["outbound|80||shadow"]["sampled_percent"] == 47.75
    assert snap["clusters"]["outbound|80||shadow"]["configured_percent"] == 50.0
    total = snap["total"]
    assert (total["matched"], total["sampled"]) == (500, 200)
    assert total["configured_percent"] == 42.0  # (200 + 10) / 500
    assert stats.cluster("outbound|80||never").share() is None
    assert stats.snapshot()["clusters"]["outbound|80||never"]["sampled_percent"] is None


def filled(stats: MirrorStats, name: str, scale: int) -> None:
    c = stats.cluster(name)
    c.matched, c.expected, c.sampled, c.sent = 3 * scale, 1.0 * scale, scale, scale
    c.failed.update({"timeout": scale, "reset": 1})
    c.dropped.update({"overflow": scale})
    c.skipped.update({"body_too_large": scale})
    c.statuses.update({200: scale, 503: 1})
    c.latency_sum = 0.0123456 * scale
    c.bytes_sent, c.bytes_received, c.resent = 100 * scale, 1000 * scale, scale
    c.grpc_statuses.update({0: scale, 14: 1, 99: 1})


def test_a_cluster_snapshot_holds_every_counter_with_its_unit() -> None:
    stats = MirrorStats()
    filled(stats, "a", 2)
    assert stats.cluster("a") is stats.cluster("a")
    assert stats.snapshot({"a": 4, "elsewhere": 1}) == {
        "clusters": {
            "a": {
                "matched": 6,
                "sampled": 2,
                "sampled_percent": 33.333,
                "configured_percent": 33.3333,
                "sent": 2,
                "failed": {"timeout": 2, "reset": 1},
                "dropped": {"overflow": 2},
                "skipped": {"body_too_large": 2},
                "in_flight": 4,
                "status": {"200": 2, "503": 1},
                "grpc_status": {"OK": 2, "UNAVAILABLE": 1, "other": 1},
                "mean_latency_ms": 12.346,  # milliseconds per answered copy
                "bytes_sent": 200,
                "bytes_received": 2000,
                "resent": 2,
            }
        },
        "total": stats.totals().to_dict(5),
        "requests_not_mirrored": {},
    }
    assert stats.cluster("a").to_dict()["in_flight"] == 0


def test_totals_add_every_cluster_up() -> None:
    stats = MirrorStats()
    filled(stats, "a", 1)
    filled(stats, "b", 3)
    stats.cluster("idle")
    stats.requests_skipped.update({"no_route_matched": 2})
    total = stats.snapshot({"b": 2})["total"]
    assert total == {
        "matched": 12,
        "sampled": 4,
        "sampled_percent": 33.333,
        "configured_percent": 33.3333,
        "sent": 4,
        "failed": {"timeout": 4, "reset": 2},
        "dropped": {"overflow": 4},
        "skipped": {"body_too_large": 4},
        "in_flight": 2,
        "status": {"200": 4, "503": 2},
        "grpc_status": {"OK": 4, "UNAVAILABLE": 2, "other": 2},
        "mean_latency_ms": 12.346,
        "bytes_sent": 400,
        "bytes_received": 4000,
        "resent": 4,
    }
    snap = stats.snapshot({"b": 2})
    assert snap["requests_not_mirrored"] == {"no_route_matched": 2}
    assert snap["clusters"]["a"]["in_flight"] == 0 and snap["clusters"]["b"]["in_flight"] == 2
    assert snap["clusters"]["idle"]["mean_latency_ms"] is None
    assert MirrorStats().rule_matches == {}


def test_the_summary_line_lists_each_cluster_and_nonzero_counter() -> None:
    assert MirrorStats().summary_line() == "mirror summary: nothing sampled yet"
    stats = MirrorStats()
    filled(stats, "b", 1)
    stats.cluster("a").sampled = 1
    assert stats.summary_line() == (
        "mirror summary: a: matched=0 sampled=1 sent=0; "
        "b: matched=3 sampled=1 (33.3%, configured 33.33%) sent=1"
        " grpc=OK:1,UNAVAILABLE:1,other:1 resent=1"
        " failed=reset:1,timeout:1 dropped=overflow:1 skipped=body_too_large:1"
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {},
            "mirror sent rule=r cluster=c endpoint=- host=- gen=0",
            id="defaults",
        ),
        pytest.param(
            {"status": 204, "latency": 0.0123, "bytes_sent": 5, "resent": True, "generation": 2},
            "mirror sent 204 rule=r cluster=c endpoint=- host=- latency=12.3ms bytes=5/0"
            " resent=1 gen=2",
            id="sent-all-fields",
        ),
        pytest.param(
            {"status": 200, "grpc_status": 14},
            "mirror sent 200 grpc=UNAVAILABLE rule=r cluster=c endpoint=- host=- gen=0",
            id="grpc-status-by-name",
        ),
        pytest.param(
            {"outcome": Outcome.FAILED, "reason": "protocol", "grpc_status": 0},
            "mirror failed: protocol rule=r cluster=c endpoint=- host=- gen=0",
            id="grpc-status-only-for-sent",
        ),
        pytest.param(
            {"latency": 1.5},
            "mirror sent rule=r cluster=c endpoint=- host=- latency=1500.0ms gen=0",
            id="latency-in-milliseconds",
        ),
        pytest.param(
            {"bytes_received": 7},
            "mirror sent rule=r cluster=c endpoint=- host=- bytes=0/7 gen=0",
            id="only-received-bytes",
        ),
        pytest.param(
            {"outcome": Outcome.FAILED, "status": 502, "reason": "timeout"},
            "mirror failed: timeout rule=r cluster=c endpoint=- host=- gen=0",
            id="status-only-for-sent",
        ),
        pytest.param(
            {"outcome": Outcome.DROPPED, "reason": "overflow", "endpoint": "127.0.0.1:9"},
            "mirror dropped: overflow rule=r cluster=c endpoint=127.0.0.1:9 host=- gen=0",
            id="dropped",
        ),
        pytest.param(
            {"rule": "a b", "cluster": "c\\d"},
            "mirror sent rule=a\\x20b cluster=c\\\\d endpoint=- host=- gen=0",
            id="fields-cannot-hold-spaces-or-bare-backslashes",
        ),
    ],
)
def test_format_outcome_fields(kwargs: dict[str, object], expected: str) -> None:
    fields: dict[str, object] = {
        "outcome": Outcome.SENT,
        "rule": "r",
        "cluster": "c",
        "endpoint": "",
        "shadow_host": "",
        **kwargs,
    }
    assert format_outcome(**fields) == expected


def test_a_field_of_exactly_the_bound_is_kept_whole() -> None:
    text = line("h" * MAX_FIELD)
    assert f" host={'h' * MAX_FIELD} " in text


@pytest.mark.parametrize(
    ("char", "shown"),
    [
        pytest.param("\udc80", "\\x80", id="lowest-undecodable-byte"),
        pytest.param("\udcff", "\\xff", id="highest-undecodable-byte"),
        pytest.param("\udd00", "\\udd00", id="other-surrogate"),
        pytest.param("\ud800", "\\ud800", id="high-surrogate"),
        pytest.param("\x80", "\\x80", id="c1-control"),
        pytest.param("\ue000", "\\ue000", id="private-use"),
        pytest.param("\u0378", "\\u0378", id="unassigned"),
        pytest.param("\u2029", "\\u2029", id="paragraph-separator"),
        pytest.param("\uffff", "\\uffff", id="last-of-the-bmp"),
        pytest.param("\U000e0001", "\\U000e0001", id="format-beyond-the-bmp"),
        pytest.param("\xa0", "\xa0", id="no-break-space-shown"),
        pytest.param("é", "é", id="letter-shown"),
    ],
)
def test_characters_outside_ascii_are_escaped_by_category(char: str, shown: str) -> None:
    assert f" host=a{shown}b " in line(f"a{char}b")
