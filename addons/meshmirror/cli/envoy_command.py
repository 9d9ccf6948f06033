"""`meshmirror envoy PATH...`: the config set as a complete static Envoy bootstrap, from the same
table the proxy serves (`meshmirror.envoy`), for `envoy -c FILE`."""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import Any, TextIO

import yaml

from meshmirror.cli.config_commands import load_or_report
from meshmirror.cli.exits import EXIT_INVALID, EXIT_OK
from meshmirror.cli.run import RunError, parse_backend, parse_listen
from meshmirror.envoy.bootstrap import Export, build_bootstrap
from meshmirror.envoy.clusters import Upstream
from meshmirror.envoy.settings import ExportSettings, read_settings
from meshmirror.files import replace_file
from meshmirror.pipeline import ConfigSet

DEFAULT_ADMIN = "127.0.0.1:9901"


def add_admin_argument(p: argparse.ArgumentParser, default: str | None = DEFAULT_ADMIN) -> None:
    """`--admin HOST:PORT`, for `envoy` and `run --engine envoy`."""
    p.add_argument(
        "--admin",
        default=default,
        metavar="HOST:PORT",
        help=f"Envoy's admin endpoint: stats, config dump (default: {DEFAULT_ADMIN})",
    )


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """The export's arguments beside the paths."""
    add_admin_argument(p)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        dest="settings",
        help="an addon option the proxy would run with (mirror_host_suffix, "
        "mirror_upstream_http2, ...): served as Envoy can, refused or warned about by name "
        "where it cannot; repeatable",
    )


def export(
    cs: ConfigSet,
    settings: ExportSettings,
    *,
    listen: str,
    admin: str,
    upstream: str | None,
) -> Export:
    """The bootstrap for a loaded config set. Raises RunError for a bad address or URL.
    `upstream` as `run --primary` takes it: a grpc:// or grpcs:// upstream is reached over
    HTTP/2 (as `run` sets `mirror_upstream_http2` for it), an https:// or grpcs:// one over TLS."""
    assert cs.table is not None
    target = None
    if upstream:
        backend = parse_backend(upstream, "--upstream")
        target = Upstream(
            backend.host, backend.port, backend.tls, settings.upstream_http2 or backend.grpc
        )
    return build_bootstrap(
        cs.table,
        cs.resources,
        settings,
        listen=parse_listen(listen),
        admin=parse_admin(admin),
        upstream=target,
    )


def parse_admin(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except RunError:
        raise RunError(f"--admin {text!r}: expected HOST:PORT, e.g. {DEFAULT_ADMIN}") from None


def dump(bootstrap: dict[str, Any], out: TextIO, *, as_json: bool) -> None:
    if as_json:
        json.dump(bootstrap, out, indent=2)
        out.write("\n")
    else:
        yaml.safe_dump(bootstrap, out, sort_keys=False, default_flow_style=False)


def report_notes(result: Export, command: str = "meshmirror envoy") -> bool:
    """Print the export's notes to stderr, each after `command:`; True when one refuses the
    export."""
    for note in result.notes:
        print(f"{command}: {note.format()}", file=sys.stderr)
    return any(n.level == "error" for n in result.notes)


def cmd_envoy(args: argparse.Namespace, out: TextIO) -> int:
    cs = load_or_report(args, out)
    if cs is None or cs.table is None:
        return EXIT_INVALID
    settings = read_settings(args.settings, default_retries=args.default_retries == "istio")
    result = export(cs, settings, listen=args.listen, admin=args.admin, upstream=args.upstream)
    if report_notes(result):
        print("meshmirror envoy: not exported (see the errors above)", file=sys.stderr)
        return EXIT_INVALID
    if args.output in (None, "-"):
        dump(result.bootstrap, out, as_json=False)
        return EXIT_OK
    text = io.StringIO()
    dump(result.bootstrap, text, as_json=args.output.endswith(".json"))
    replace_file(args.output, text.getvalue().encode("utf-8"))
    print(f"meshmirror envoy: wrote {args.output} (run: envoy -c {args.output})", file=sys.stderr)
    return EXIT_OK
