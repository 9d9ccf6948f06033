"""The options of the Inspection child addon (inspection.py), declared as data.

Mirror flows, the outcome log, comparison and replay pacing are options of `Inspection`, not of
`Mirror`, so they are declared apart from options.py's `OPTIONS`, in the same `OptionSpec` form;
`Inspection.load` hands them to mitmproxy's loader. Parsing and the translation of bad values
into `OptionsError` stay in `Inspection.configure`.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshmirror.mitm.flows import FLOW_MODES
from meshmirror.mitm.options import OptionSpec

INSPECTION_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "mirror_flows",
        str,
        "auto",
        "Show each mirrored copy as its own flow, right after its original (marked "
        ":left_right_arrow:, the original :black_small_square:; is_replay=request, so "
        "~replayq selects them): view adds them to mitmweb's / the console's view only; "
        "hooks also runs them through every addon (-w saves them, mitmdump prints them); "
        "off. auto: view where a view exists (mitmweb, console), else off.",
        choices=FLOW_MODES,
    ),
    OptionSpec(
        "mirror_flows_max",
        int,
        1000,
        "Most mirror flows kept in the view; the oldest are removed beyond it.",
    ),
    OptionSpec(
        "mirror_log",
        str,
        "",
        "Append one JSON line per sampled copy to this file (outcome, statuses, latencies, "
        "bytes, comparison); flushed per line, never contains header values.",
    ),
    OptionSpec(
        "mirror_compare",
        bool,
        False,
        "Compare each copy's response with the primary's (status, headers, body). Per "
        "VirtualService: annotation meshmirror.io/compare: 'true' or 'false'.",
    ),
    OptionSpec(
        "mirror_compare_ignore_headers",
        Sequence[str],
        [],
        "Response headers not compared, added to the defaults (Date, Server, X-Request-Id, "
        "Set-Cookie, Content-Length, ETag, X-Envoy-*, ...). Globs allowed.",
    ),
    OptionSpec(
        "mirror_compare_ignore_json",
        Sequence[str],
        [],
        "JSON pointers not compared in JSON bodies (e.g. /origin, /items/*/id; * matches "
        "any key or index; a pointer ignores everything below it).",
    ),
    OptionSpec(
        "mirror_compare_max_body",
        str,
        "256k",
        "Largest body compared in full (and kept for a mirror flow); larger ones are "
        "compared by size and hash only.",
    ),
    OptionSpec(
        "mirror_record",
        str,
        "",
        "Write the mirror flows (request as sent, shadow response) to this mitmproxy flow "
        "file, for mitmweb -r.",
    ),
    OptionSpec(
        "mirror_replay_rate",
        str,
        "",
        "Pace requests read from a recording (-r): requests per second (50), or x1 / x2 / "
        "x0.5 to follow the recording's own timing scaled. Empty: as fast as the mirror "
        "writer has room.",
    ),
    OptionSpec(
        "mirror_compare_noise",
        str,
        "",
        "A JSON file for the noise learned from baselines (meshmirror.io/compare-baseline): "
        "loaded at startup when it exists, written at exit, so a later run starts with it.",
    ),
    OptionSpec(
        "mirror_replay_sample",
        str,
        "percentages",
        "Which requests read from a recording (-r) are mirrored: percentages (each rule's "
        "mirrorPercentage, as live traffic) or all (every recorded request a rule matches, "
        "for an offline comparison).",
        choices=("percentages", "all"),
    ),
)
