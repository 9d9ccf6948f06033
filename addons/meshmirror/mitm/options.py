"""The addon's mitmproxy options: declarations with their help texts, and parsing helpers.

The declarations are data (`OPTIONS`); `register_options` hands them to mitmproxy's loader in
`load()`. Re-registering an identical option is a no-op, so script hot reload keeps working.
Every bad option value or config becomes mitmproxy's `OptionsError` here (`option_error`,
`parse_option`), naming the option and its value: this module is the addons' boundary, where
configuration errors become mitmproxy's errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from mitmproxy import ctx, exceptions
from mitmproxy.proxy import mode_specs

from meshmirror.mirror import shadow
from meshmirror.routing.sampling import SAMPLING_MODES

T = TypeVar("T")

VERBOSITIES = ("each", "errors", "summary")
SENDERS = ("process", "loop")
DEFAULT_RETRIES = ("off", "istio")


class OptionSpec(NamedTuple):
    """One `loader.add_option` call: the typespec is one that `--set` can parse (no float)."""

    name: str
    typespec: Any
    default: Any
    help: str
    choices: Sequence[str] | None = None


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "mirror_config",
        Sequence[str],
        [],
        "Istio YAML files or directories (VirtualService, DestinationRule, ServiceEntry, "
        "Gateway, WorkloadEntry, Service) that define routes and mirrors. Repeat to add more. "
        "Any error stops startup with every located message.",
    ),
    OptionSpec(
        "mirror_gateway",
        str,
        "",
        "The Gateway this proxy acts as (ns/name or name). Empty: the only Gateway in the "
        "config, or the mesh (sidecar semantics) when there is none.",
    ),
    OptionSpec(
        "mirror_host_suffix",
        str,
        shadow.DEFAULT_SUFFIX,
        "Appended to the host part of Host/:authority on each copy, before any :port "
        "(httpbin:8000 -> httpbin-shadow:8000). Empty keeps the original Host, as "
        "Istio >= 1.28 does by default.",
    ),
    OptionSpec(
        "mirror_upstream_http2",
        bool,
        False,
        "The reverse-proxy upstream speaks HTTP/2 (a gRPC server): reach it with h2c (prior "
        "knowledge) in plain text, ALPN h2 over TLS. Off: HTTP/1.1 in plain text, and over TLS "
        "what the client offered. Clusters with endpoints follow their port protocol instead.",
    ),
    OptionSpec(
        "mirror_timeout",
        str,
        "5s",
        "Time limit for one whole mirrored exchange, connect included (Go duration: 5s, 250ms).",
    ),
    OptionSpec(
        "mirror_max_inflight",
        int,
        256,
        "Copies in flight per mirror cluster. A sampled copy over the cap is dropped and "
        "counted, never queued and never waited on.",
    ),
    OptionSpec(
        "mirror_sender",
        str,
        "process",
        "Where copies are sent from: `process` (a child process, so the copies' sockets, "
        "timeouts and slow mirrors cost the proxy's loop almost nothing) or `loop` "
        "(mitmproxy's own event loop; no extra process).",
        SENDERS,
    ),
    OptionSpec(
        "mirror_max_body",
        str,
        "4m",
        "Largest request body that is mirrored (4m, 512k, bytes). Larger bodies are not "
        "mirrored (outcome skipped: body_too_large); copies are never truncated.",
    ),
    OptionSpec(
        "mirror_sampling",
        str,
        "random",
        "How a request is sampled: random, or request-id (a stable hash of x-request-id, so "
        "every replica decides alike; random when the header is absent).",
        choices=SAMPLING_MODES,
    ),
    OptionSpec(
        "mirror_seed",
        int | None,
        None,
        "Seed for random sampling decisions, to make them reproducible.",
    ),
    OptionSpec(
        "mirror_verbosity",
        str,
        "errors",
        "Event log: each (one line per mirror outcome), errors (failures, drops, skips and "
        "re-sent copies, plus a periodic summary) or summary (the periodic summary only).",
        choices=VERBOSITIES,
    ),
    OptionSpec(
        "mirror_redact_headers",
        Sequence[str],
        [],
        "Headers removed from every copy (e.g. Authorization), or kept with a masked value "
        "with NAME=mask (e.g. Cookie=mask). The primary is never changed. Header values never "
        "appear in meshmirror's log lines, whatever this says.",
    ),
    OptionSpec(
        "mirror_methods",
        Sequence[str],
        [],
        "Only requests with these methods are mirrored (e.g. GET, HEAD); others are counted as "
        "skipped: method. Empty: every method, as Istio does.",
    ),
    OptionSpec(
        "mirror_connection_log",
        bool,
        True,
        "mitmproxy's per-connection lines in the event log (client connect / disconnect, "
        "server connect / disconnect). false leaves them out (meshmirror run's default); "
        "mitmproxy's other lines stay.",
    ),
    OptionSpec(
        "mirror_summary_interval",
        str,
        "30s",
        "How often the mirror summary line is logged when anything changed (Go duration; 0 "
        "turns it off).",
    ),
    OptionSpec(
        "mirror_breaker_failures",
        int,
        5,
        "Consecutive failed copies after which a mirror cluster fails fast (copies dropped: "
        "circuit_open) for mirror_breaker_cooldown, then one probe copy decides. 0 disables.",
    ),
    OptionSpec(
        "mirror_breaker_cooldown",
        str,
        "10s",
        "How long an open mirror circuit drops copies before a probe is let through (Go duration).",
    ),
    OptionSpec(
        "mirror_reload_interval",
        str,
        "2s",
        "How often the files of mirror_config are checked for changes (Go duration; 0 turns "
        "watching off; the command mirror.reload always works). A change that does not "
        "validate is rejected and the last good config keeps serving.",
    ),
    OptionSpec(
        "mirror_metrics",
        str,
        "",
        "Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464; port 0 "
        "picks one and logs it). Empty: off.",
    ),
    OptionSpec(
        "mirror_default_retries",
        str,
        "off",
        "Retries for routes without `retries`: off (none; mitmproxy forwards the primary) or "
        "istio (Istio's mesh default: 2 retries on connect-failure, refused-stream, "
        "unavailable, cancelled; the proxy then sends those primaries itself, HTTP/1.1 on a "
        "fresh connection per attempt, as for routes with `timeout` or `retries`; upgrades and "
        "gRPC keep mitmproxy's forwarding).",
        DEFAULT_RETRIES,
    ),
    OptionSpec(
        "mirror_timeline",
        str,
        "",
        "Append a per-request timeline to this file (JSON lines): mitmproxy's stamps, each "
        "hook event over the addon chain, the addon's own time per hook, and for each copy "
        "submit, hand-off to the sender, socket write, first response byte and completion. "
        "Costs time per request: for finding where a slow request spent its time. Empty: off.",
    ),
)


def parse_default_retries(value: str) -> bool:
    """`mirror_default_retries`: True for `istio` (mitmproxy does not enforce `choices`)."""
    if value not in DEFAULT_RETRIES:
        raise ValueError(f"must be one of {', '.join(DEFAULT_RETRIES)}")
    return value == "istio"


def register_options(loader: Any) -> None:
    """Declare every option of `OPTIONS` with mitmproxy (from the addon's `load`)."""
    for spec in OPTIONS:
        loader.add_option(spec.name, spec.typespec, spec.default, spec.help, choices=spec.choices)


def option_error(text: str) -> exceptions.OptionsError:
    """The one way meshmirror's addons report a bad option value or config to mitmproxy: startup
    (or the `--set`) stops with `text`, and the last good state stays in force."""
    return exceptions.OptionsError(text)  # type: ignore[no-untyped-call]


def parse_option(name: str, parse: Callable[[Any], T]) -> T:
    """Parse option `name` with `parse`, turning its ValueError into a located OptionsError."""
    value = getattr(ctx.options, name)
    try:
        return parse(value)
    except ValueError as e:
        text = str(e)
        if not text.startswith(f"{name}:"):  # some parsers name the option themselves
            text = f"{name}: {text}"
        raise option_error(f"{text} (got {value!r})") from e


def configured_listen_addrs() -> list[tuple[str, int]] | None:
    """Our listen addresses as configured; None when a port is left to the OS (`-p 0`)."""
    opts = ctx.options
    if "mode" not in opts:
        return []
    out: list[tuple[str, int]] = []
    for spec in opts.mode:
        try:
            mode = mode_specs.ProxyMode.parse(spec)
        except ValueError:
            return []
        port = mode.listen_port(opts.listen_port)
        if port is None:
            continue
        if port == 0:
            return None
        out.append((mode.listen_host(opts.listen_host), port))
    return out


def mode_warning() -> str | None:
    """What to tell a user whose mitmproxy is not a reverse proxy (None when it is one, or when
    it only replays a recording): clients that talk to it as to the service get 502s, and
    destinations without endpoints have no upstream to go to."""
    opts = ctx.options
    if "mode" not in opts or getattr(opts, "rfile", None):
        return None
    modes = list(opts.mode)
    if any(spec.startswith("reverse:") for spec in modes):
        return None
    shown = ", ".join(modes) or "regular"
    return (
        f"meshmirror: mitmproxy runs in {shown} mode, not as a reverse proxy: a client that "
        "sends its requests to the proxy as to the service gets 502, and a destination without "
        "ServiceEntry endpoints has no upstream; to put meshmirror in front of a service, start "
        "it with --mode reverse:http://PRIMARY (or use `meshmirror run --primary URL ...`)"
    )
