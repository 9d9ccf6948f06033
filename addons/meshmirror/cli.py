"""`meshmirror validate | routes | explain | report | run | addon-path`: check configs, see the
table the proxy will use, summarise its outcomes, and run it.

Exit codes: 0 fine, 1 configuration errors (or, for explain, a request that matches nothing is
still 0), 2 usage errors or unreadable paths.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO
from urllib.parse import urlsplit

from meshmirror import __version__
from meshmirror.config.loader import PathError, discover_config_sets
from meshmirror.diagnostics import Severity
from meshmirror.mirror import shadow
from meshmirror.pipeline import ConfigSet, load_config_set
from meshmirror.routing.explain import explain_request, policy_lines, route_policy_lines
from meshmirror.routing.request_view import RequestView
from meshmirror.routing.sampling import describe_fraction
from meshmirror.routing.table import RouteTable
from meshmirror.run import DEFAULT_LISTEN, RunError, addon_path
from meshmirror.run import run as run_proxy

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


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
        help="run the mirroring proxy: mitmdump with the addon, from URLs or from YAML",
        description="Run mitmdump (mitmweb with --web) in reverse mode to the primary with the "
        "addon. With --mirror, the Istio YAML for it (ServiceEntries, a Gateway and a "
        "VirtualService) is written first: `meshmirror run --primary http://127.0.0.1:8080 "
        "--mirror http://127.0.0.1:9090@50`. With -f, existing YAML is served: `meshmirror run "
        "-f configs/ --primary http://127.0.0.1:8080`. Arguments after `--` go to mitmdump. "
        "Ctrl-C stops the proxy after it drained its copies.",
    )
    run.add_argument("--primary", required=True, metavar="URL", help="where requests are served")
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
        "--write-config",
        default=None,
        metavar="DIR",
        help="write the generated YAML to DIR and keep it (default: a temporary directory)",
    )
    run.set_defaults(func=cmd_run)

    ap = sub.add_parser(
        "addon-path",
        help="print the path of the addon script for `mitmdump -s`",
        description='For an installed package: `mitmdump -s "$(meshmirror addon-path)" '
        "--mode reverse:http://PRIMARY --set mirror_config=DIR`.",
    )
    ap.set_defaults(func=cmd_addon_path)
    return p


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
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
    )


def cmd_addon_path(args: argparse.Namespace, out: TextIO) -> int:
    print(addon_path(), file=out)
    return EXIT_OK


def _default_retries_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--default-retries",
        choices=("off", "istio"),
        default="off",
        help="as the addon's mirror_default_retries option: whether routes without retries get "
        "Istio's mesh default retry policy (default: %(default)s)",
    )


# --- validate -----------------------------------------------------------------------------------


def _config_sets(paths: Sequence[str]) -> list[list[str]]:
    files = [p for p in paths if not os.path.isdir(p)]
    sets: list[list[str]] = [files] if files else []
    for p in paths:
        if os.path.isdir(p):
            found = discover_config_sets(p)
            sets.extend([[d] for d in found] or [[p]])
    return sets


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    sets = _config_sets(args.paths)
    threshold = Severity(args.failure_threshold.lower())
    failed = 0
    for paths in sets:
        cs = load_config_set(paths, gateway=args.gateway)
        for d in cs.diagnostics:
            # Analysis findings at istioctl's level: IST0101 reads as an error here.
            if not args.quiet or d.level is Severity.ERROR:
                print(d.format(d.level), file=out)
        name = ", ".join(paths)
        at_threshold = [d for d in cs.diagnostics if d.level.rank >= threshold.rank]
        if cs.errors:
            failed += 1
            print(
                f"{name}: INVALID: {len(cs.errors)} error(s), {len(cs.warnings)} warning(s)",
                file=out,
            )
        elif at_threshold:
            failed += 1
            print(
                f"{name}: FAILED: {len(at_threshold)} finding(s) at or above "
                f"{args.failure_threshold} (--failure-threshold); the proxy would serve it, "
                "logging them as warnings",
                file=out,
            )
        elif not args.quiet:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(cs.counts().items())) or "no resources"
            print(
                f"{name}: OK: {len(cs.files)} file(s), {kinds}; {len(cs.warnings)} warning(s)",
                file=out,
            )
    return EXIT_INVALID if failed else EXIT_OK


def _print_diagnostics(cs: ConfigSet, out: TextIO, *, quiet: bool = False) -> None:
    for d in cs.diagnostics:
        if quiet and d.severity is not Severity.ERROR:
            continue
        print(d.format(), file=out)


def _load_or_report(args: argparse.Namespace, out: TextIO) -> ConfigSet | None:
    cs = load_config_set(args.paths, gateway=args.gateway)
    if cs.errors or cs.table is None:
        _print_diagnostics(cs, sys.stderr, quiet=True)
        print(
            f"meshmirror: {len(cs.errors)} configuration error(s); no route table", file=sys.stderr
        )
        return None
    for d in cs.warnings:
        print(d.format(), file=sys.stderr)
    return cs


# --- routes -------------------------------------------------------------------------------------


def cmd_routes(args: argparse.Namespace, out: TextIO) -> int:
    cs = _load_or_report(args, out)
    if cs is None or cs.table is None:
        return EXIT_INVALID
    default_retries = args.default_retries == "istio"
    if args.format == "json":
        json.dump(cs.table.to_envoy(default_retries=default_retries), out, indent=2)
        out.write("\n")
    else:
        print_table(cs.table, out, default_retries=default_retries)
    return EXIT_OK


def print_table(table: RouteTable, out: TextIO, *, default_retries: bool = False) -> None:
    print(f"acting as: {table.gateway or 'mesh'}   listener port: {table.listener_port}", file=out)
    for vh in table.virtual_hosts:
        print(f"\nvirtual host {vh.name}   domains: {', '.join(vh.domains)}", file=out)
        for route in vh.routes:
            print(f"  {route.label}  match: {route.matcher.describe()}", file=out)
            if route.action != "route":
                print(f"      {route.action} (answered by the proxy, not mirrored)", file=out)
            for wc in route.clusters:
                where = _endpoints_text(wc.cluster)
                weight = f" weight {wc.weight}" if len(route.clusters) > 1 else ""
                print(f"      -> {wc.cluster.name}{weight}  [{where}]", file=out)
            for m in route.mirrors:
                where = _endpoints_text(m.cluster)
                frac = describe_fraction(m)
                print(f"      mirror {m.cluster.name} {frac}  [{where}]", file=out)
            for line in route_policy_lines(route, default_retries=default_retries):
                print(f"      {line}", file=out)


def _endpoints_text(cluster: object) -> str:
    eps = getattr(cluster, "endpoints", ())
    if not eps:
        return "no endpoints in config: reverse-proxy upstream"
    tls = " tls" if getattr(cluster, "tls", None) is not None else ""
    return ", ".join(f"{e.address}:{e.port}" for e in eps) + tls


# --- explain ------------------------------------------------------------------------------------


def _explained_request(text: str, headers: Sequence[tuple[str, str]]) -> tuple[str, str, str, str]:
    """(method, scheme, authority, path) from `GET http://host/path`, a bare URL (GET), or
    `GET /path` with the Host from -H, as curl takes them. Raises ValueError with the reason."""
    first, _, rest = text.strip().partition(" ")
    method, target = (first, rest.strip()) if rest.strip() else ("GET", first)
    if target.startswith("/"):
        host = next((v for n, v in headers if n.lower() == "host"), "")
        if not host:
            raise ValueError("a path alone needs the Host: add -H 'Host: NAME' or give a URL")
        scheme, authority = "http", host
        path, _, query = target.partition("?")
    else:
        parts = urlsplit(target if "://" in target else f"http://{target}")
        if not parts.netloc:
            raise ValueError("expected 'GET http://host[:port]/path', a URL, or 'GET /path'")
        scheme, authority, path, query = parts.scheme, parts.netloc, parts.path, parts.query
    if not method.isalpha():
        raise ValueError(f"{method!r} is not an HTTP method")
    path = path or "/"
    return method.upper(), scheme, authority, path + (f"?{query}" if query else "")


def cmd_explain(args: argparse.Namespace, out: TextIO) -> int:
    headers: list[tuple[str, str]] = []
    for h in args.headers:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            print(f"meshmirror: -H must look like 'name: value' (got {h!r})", file=sys.stderr)
            return EXIT_USAGE
        headers.append((name.strip(), value.strip()))
    try:
        method, scheme, authority, path = _explained_request(args.request, headers)
    except ValueError as e:
        print(f"meshmirror: --request {args.request!r}: {e}", file=sys.stderr)
        return EXIT_USAGE
    body_size = 0
    if args.body_file:
        try:
            body_size = os.path.getsize(args.body_file)
        except OSError as e:
            print(f"meshmirror: --body-file {args.body_file}: {e.strerror}", file=sys.stderr)
            return EXIT_USAGE
    cs = _load_or_report(args, out)
    if cs is None or cs.table is None:
        return EXIT_INVALID
    table = cs.table
    others = [(n, v) for n, v in headers if n.lower() != "host"]
    view = RequestView.build(
        method=method,
        scheme=scheme,
        authority=authority,
        path=path,
        header_items=[("host", authority), *others],
        port=table.listener_port,
    )
    ex = explain_request(table, view)
    print(f"request: {method} {scheme}://{authority}{path}", file=out)
    print(f"acting as: {table.gateway or 'mesh'}", file=out)
    for line in ex.lines():
        print(line, file=out)
    if ex.route is None:
        print(
            "result: no route matched; forwarded to the reverse-proxy upstream unchanged, "
            "not mirrored",
            file=out,
        )
        return EXIT_OK
    route = ex.route
    print(
        f"matched: {route.label} (VirtualService {route.virtual_service}, rule {route.rule_index})",
        file=out,
    )
    lines, preflight = policy_lines(
        route, view, path, default_retries=args.default_retries == "istio"
    )
    for line in lines:
        print(line, file=out)
    if preflight:
        print(
            "action: cors preflight (answered by the proxy; never forwarded, never mirrored)",
            file=out,
        )
        return EXIT_OK
    if route.action != "route":
        print(
            f"action: {route.action} (answered by the proxy; never forwarded, never mirrored)",
            file=out,
        )
        return EXIT_OK
    for wc in route.clusters:
        share = f" weight {wc.weight}" if len(route.clusters) > 1 else ""
        print(f"primary: {wc.cluster.name}{share} -> {_endpoints_text(wc.cluster)}", file=out)
    if not route.mirrors:
        print("mirrors: none", file=out)
    shadow_authority = shadow.shadow_host(authority, args.host_suffix)
    for m in route.mirrors:
        print(
            f"mirror: {m.cluster.name} {describe_fraction(m)} -> {_endpoints_text(m.cluster)}; "
            f"copy carries Host: {shadow_authority}",
            file=out,
        )
    if body_size:
        print(f"body: {body_size} bytes (copies larger than mirror_max_body are skipped)", file=out)
    return EXIT_OK


# --- report -------------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    from meshmirror.outcomes.log import read_records
    from meshmirror.outcomes.report import (
        build_report,
        is_outcome_record,
        render_html,
        render_text,
    )
    from meshmirror.outcomes.verdict import ConditionError, evaluate, junit_xml, parse_condition

    try:
        conditions = [parse_condition(text) for text in args.fail_on]
    except ConditionError as e:
        print(f"meshmirror: --fail-on {e}", file=sys.stderr)
        return EXIT_USAGE

    try:
        records = read_records(args.log)
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "not a text file"
        print(f"meshmirror: {args.log}: {reason}", file=sys.stderr)
        return EXIT_USAGE
    kept = [r for r in records if is_outcome_record(r)]
    if not kept:
        what = f"none of its {len(records)} JSON line(s) is" if records else "no line is"
        print(
            f"meshmirror: {args.log}: not a meshmirror outcome log ({what} an outcome record; "
            "`--set mirror_log=PATH` writes one)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if len(kept) < len(records):
        print(
            f"meshmirror: {args.log}: {len(records) - len(kept)} line(s) are not outcome "
            "records and were left out",
            file=sys.stderr,
        )
    groups = build_report(kept)
    render_text(groups, out, args.log)
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(render_html(groups, args.log))
        print(f"\nHTML report written to {args.html}", file=out)
    if not conditions and not args.min_samples:
        return EXIT_OK
    verdict = evaluate(groups, conditions, args.min_samples)
    print("\nverdict:", file=out)
    for rule, cluster, n in verdict.too_few:
        print(
            f"  TOO FEW  {rule} -> {cluster}: {n} sampled < --min-samples {args.min_samples}",
            file=out,
        )
    for finding in verdict.findings:
        unknown = finding.figure is None or finding.limit is None
        state = "FAIL" if finding.holds else ("UNKNOWN" if unknown else "ok")
        print(f"  {state:<8} {finding.rule} -> {finding.cluster}: {finding.text()}", file=out)
    if args.junit:
        with open(args.junit, "w", encoding="utf-8") as fj:
            fj.write(junit_xml(verdict))
    if verdict.too_few:
        return EXIT_USAGE
    return EXIT_INVALID if verdict.failed else EXIT_OK
