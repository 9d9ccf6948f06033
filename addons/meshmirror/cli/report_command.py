"""`meshmirror report`: the outcome log summarised per rule and mirror, and the verdict of its
`--fail-on` conditions."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from meshmirror.cli.exits import EXIT_INVALID, EXIT_OK, EXIT_USAGE
from meshmirror.files import replace_file


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    from meshmirror.outcomes.log import read_records
    from meshmirror.outcomes.report import (
        build_report,
        is_outcome_record,
        render_html,
        render_text,
    )
    from meshmirror.outcomes.verdict import (
        ConditionError,
        evaluate,
        junit_xml,
        parse_condition,
        verdict_lines,
    )

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
    judged = bool(conditions or args.min_samples)
    verdict = evaluate(groups, conditions, args.min_samples) if judged else None
    lines = verdict_lines(verdict, args.min_samples) if verdict is not None else None
    if args.html:
        if not _write(args.html, render_html(groups, args.log, lines)):
            return EXIT_USAGE
        print(f"\nHTML report written to {args.html}", file=out)
    if verdict is None or lines is None:
        return EXIT_OK
    print("\nverdict:", file=out)
    for state, line in lines:
        print(f"  {state:<8} {line}", file=out)
    if args.junit and not _write(args.junit, junit_xml(verdict)):
        return EXIT_USAGE
    if verdict.too_few:
        return EXIT_USAGE
    return EXIT_INVALID if verdict.failed else EXIT_OK


def _write(path: str, text: str) -> bool:
    """Write an output file whole (a new file renamed into place: a CI job never reads half of
    one, and a link at the path is replaced, not written through); False, said, on failure."""
    try:
        replace_file(path, text.encode("utf-8"))
    except OSError as e:
        print(f"meshmirror: {path}: {e.strerror or e}", file=sys.stderr)
        return False
    return True
