"""`meshmirror validate | routes | explain`: check configs with Istio's rules and show the table
the proxy will use, and how one request goes through it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO
from urllib.parse import urlsplit

from meshmirror.cli.exits import EXIT_INVALID, EXIT_OK, EXIT_USAGE
from meshmirror.config.loader import discover_config_sets
from meshmirror.diagnostics import Severity
from meshmirror.mesh.clusters import Cluster
from meshmirror.mirror import shadow
from meshmirror.pipeline import ConfigSet, load_config_set
from meshmirror.protocols import CLIENT
from meshmirror.routing.explain import explain_request, policy_lines, route_policy_lines
from meshmirror.routing.request_view import RequestView
from meshmirror.routing.sampling import describe_fraction
from meshmirror.routing.table import RouteTable


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


def load_or_report(args: argparse.Namespace, out: TextIO) -> ConfigSet | None:
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
    cs = load_or_report(args, out)
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
                where = _endpoints_text(wc.cluster, table)
                weight = f" weight {wc.weight}" if len(route.clusters) > 1 else ""
                print(f"      -> {wc.cluster.name}{weight}  [{where}]", file=out)
            for m in route.mirrors:
                where = _endpoints_text(m.cluster, table)
                frac = describe_fraction(m)
                print(f"      mirror {m.cluster.name} {frac}  [{where}]", file=out)
            for line in route_policy_lines(route, default_retries=default_retries):
                print(f"      {line}", file=out)


def _endpoints_text(cluster: Cluster, table: RouteTable) -> str:
    """Where a cluster's requests go and how: `10.0.0.1:8080, 10.0.0.2:8080 tls, HTTP/2`."""
    if not cluster.endpoints:
        return "no endpoints in config: reverse-proxy upstream"
    tls = " tls" if cluster.tls is not None else ""
    protocol = table.upstream_protocol(cluster)
    if protocol == CLIENT:
        protocol = "the client's protocol"
    where = ", ".join(f"{e.address}:{e.port}" for e in cluster.endpoints)
    return f"{where}{tls}, {protocol}"


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
    cs = load_or_report(args, out)
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
        print(
            f"primary: {wc.cluster.name}{share} -> {_endpoints_text(wc.cluster, table)}", file=out
        )
    if not route.mirrors:
        print("mirrors: none", file=out)
    shadow_authority = shadow.shadow_host(authority, args.host_suffix)
    for m in route.mirrors:
        where = _endpoints_text(m.cluster, table)
        print(
            f"mirror: {m.cluster.name} {describe_fraction(m)} -> {where}; "
            f"copy carries Host: {shadow_authority}",
            file=out,
        )
    if body_size:
        print(f"body: {body_size} bytes (copies larger than mirror_max_body are skipped)", file=out)
    return EXIT_OK
