"""`meshmirror report`: the outcome log summarised per rule and mirror, and the verdict of its
`--fail-on` conditions."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from meshmirror.cli.exits import EXIT_INVALID, EXIT_OK, EXIT_USAGE


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
