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
