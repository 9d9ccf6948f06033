"""Mutation testing of the core modules with mutmut: how many one-line changes the unit tests catch.

    scripts/mutate [--quick] [--jobs N] [--verbose] [MODULE ...]

mutmut changes one thing at a time in the code (`<` to `<=`, a constant, a dropped `not`, a
removed argument, ...) and runs the unit tests that call the changed function against each such
*mutant*. A mutant that no test fails on is behaviour nobody would notice breaking. Prints
killed / survived / equivalent per module, lists every surviving mutant with its diff, and exits
1 when a module kills less than `THRESHOLD` of its mutants (equivalent ones excluded) or the
equivalent list is stale, 2 when a run itself fails (e.g. the unmutated tests do not pass).
A timeout counts as killed: the tests noticed.

Each module is tested by its own unit-test files (`Module.tests`), never by tests/e2e, in a
mutmut run of its own, so a test elsewhere that happens to call the module does not count.
Equivalent mutants (no test can tell them from the original) are listed with the reason in
`EQUIVALENT_FILE`; an entry that no longer names a surviving mutant fails the run, so the list
cannot hide a new survivor.

mutmut 3 names mutants after the module path relative to where it runs (`meshmirror.routing.
paths`) and puts its copy of the tree, `mutants/`, on sys.path ahead of the original. The package
lives under addons/, so each module runs in a staging directory, `STAGE/<module>` (git-ignored),
that holds `meshmirror/` and `tests/` as links to the real ones and a pyproject.toml made of the
project's own (pytest settings) plus the `[tool.mutmut]` table built here. mutmut copies both
trees into `mutants/` when it starts. Every run starts afresh: mutmut would otherwise keep old
verdicts for unchanged functions even after the tests changed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / ".mutmut"
EQUIVALENT_FILE = Path(__file__).with_name("mutate-equivalent.txt")
PACKAGE = "meshmirror"
THRESHOLD = 0.90


@dataclass(frozen=True)
class Module:
    """A core module: its files under addons/meshmirror/ and the unit-test files that count."""

    files: tuple[str, ...]
    tests: tuple[str, ...]


MODULES: dict[str, Module] = {
    "sampling": Module(("routing/sampling.py",), ("tests/routing/test_sampling.py",)),
    "percent": Module(("percent.py",), ("tests/test_percent.py",)),
    "shadow": Module(("mirror/shadow.py",), ("tests/mirror/test_shadow.py",)),
    "matchers": Module(
        ("routing/matchers.py", "routing/match.py", "routing/compile_match.py"),
        (
            "tests/routing/test_matchers.py",
            "tests/routing/test_match.py",
            "tests/routing/test_compile_match.py",
        ),
    ),
    "paths": Module(("routing/paths.py",), ("tests/routing/test_paths.py",)),
    "breaker": Module(("mirror/breaker.py",), ("tests/mirror/test_breaker.py",)),
    "counters": Module(("outcomes/counters.py",), ("tests/outcomes/test_counters.py",)),
    "validation": Module(
        ("validate/destinations.py",),
        ("tests/validate/test_destinations.py", "tests/validate/test_resources.py"),
    ),
    "http1": Module(("mirror/http1.py",), ("tests/mirror/test_http1.py",)),
    "request_head": Module(
        ("mirror/request_head.py",),
        (
            "tests/mirror/test_request_head.py",
            "tests/mirror/test_shadow.py",
            "tests/mirror/test_http2.py",
        ),
    ),
    "compare": Module(
        (
            "outcomes/compare.py",
            "outcomes/compare_inputs.py",
            "outcomes/diff_rules.py",
            "outcomes/field_diff.py",
            "outcomes/grpc_diff.py",
        ),
        ("tests/outcomes/test_compare.py",),
    ),
}
# --quick: small modules of different kinds (arithmetic, path parsing, a state machine, header
# rewriting, bytes on the wire), about a minute in all; the full run is the measure.
QUICK = ("percent", "sampling", "paths", "breaker", "shadow", "request_head")

# Options for every pytest run: no cache written into the copied tree; hypothesis with a fixed
# seed, so that a property test kills the same mutants on every run.
PYTEST_ARGS = ("-p", "no:cacheprovider", "--hypothesis-seed=0")

# mutmut's verdicts (mutmut.stats.status_by_exit_code) that mean a test noticed the change.
# Everything else (survived, no tests, suspicious, not checked) is a survivor.
KILLED = frozenset({"killed", "timeout", "segfault", "caught by type check"})


@dataclass
class Tally:
    killed: int = 0
    survived: int = 0
    equivalent: int = 0

    def add(self, other: Tally) -> None:
        self.killed += other.killed
        self.survived += other.survived
        self.equivalent += other.equivalent

    @property
    def score(self) -> float:
        """Killed share of the non-equivalent mutants."""
        real = self.killed + self.survived
        return self.killed / real if real else 1.0


@dataclass(frozen=True)
class Equivalent:
    """One line of EQUIVALENT_FILE: `MUTANT | CHANGED LINE | WHY`."""

    name: str
    change: str  # the mutated line, whitespace-normalised (see `changed_line`)
    why: str
    line: int


@dataclass(frozen=True)
class Result:
    module: str
    name: str
    status: str


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        prog="scripts/mutate",
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="modules: " + ", ".join(MODULES) + "\n--quick: " + ", ".join(QUICK),
    )
    p.add_argument("modules", nargs="*", metavar="MODULE", help="core modules (default: all)")
    p.add_argument("--quick", action="store_true", help="only the --quick modules")
    p.add_argument("--jobs", type=int, default=2, help="mutants tested in parallel (default 2)")
    p.add_argument("--verbose", action="store_true", help="show mutmut's own progress")
    args = p.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        p.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    if args.quick and args.modules:
        p.error("--quick runs its own modules; give either --quick or MODULE names")
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    return args


def toml_list(values: Iterable[str]) -> str:
    # A JSON string is a valid TOML basic string.
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def stage(module: str) -> Path:
    """A fresh staging directory for one module's run (see the module docstring)."""
    where = STAGE / module
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    (where / PACKAGE).symlink_to(ROOT / "addons" / PACKAGE)
    (where / "tests").symlink_to(ROOT / "tests")
    m = MODULES[module]
    table = [
        "",
        "# Written by scripts/mutate.py for this run.",
        "[tool.mutmut]",
        f"source_paths = {toml_list([PACKAGE])}",
        f"only_mutate = {toml_list(f'{PACKAGE}/{f}' for f in m.files)}",
        f"pytest_add_cli_args_test_selection = {toml_list(m.tests)}",
        f"pytest_add_cli_args = {toml_list(PYTEST_ARGS)}",
        # A mutant may use 2 * multiplier * (its tests' CPU time + constant) CPU seconds; with
        # mutmut's defaults (15, 1) one that loops forever holds a worker for a minute.
        "timeout_multiplier = 2.0",
        "timeout_constant = 1.0",
        "",
    ]
    project = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (where / "pyproject.toml").write_text(project + "\n".join(table), encoding="utf-8")
    return where


def run_mutmut(where: Path, jobs: int, verbose: bool) -> bool:
    mutmut = Path(sys.executable).with_name("mutmut")
    cmd = [str(mutmut), "run", "--max-children", str(jobs)]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    if verbose:
        return subprocess.call(cmd, cwd=where, env=env) == 0
    log = where / "mutmut.log"
    with log.open("wb") as out:
        code = subprocess.call(cmd, cwd=where, env=env, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        # The spinner redraws its line with carriage returns; keep what each line ended as.
        text = log.read_text(encoding="utf-8", errors="replace")
        lines = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
        print("\n".join(lines[-40:]), file=sys.stderr)
    return code == 0


def load_results(module: str, where: Path) -> list[Result]:
    from mutmut.stats import status_by_exit_code

    results: list[Result] = []
    for f in MODULES[module].files:
        meta = where / "mutants" / PACKAGE / (f + ".meta")
        data = json.loads(meta.read_text(encoding="utf-8"))
        for name, code in data["exit_code_by_key"].items():
            results.append(Result(module, name, status_by_exit_code[code]))
    return results


def diffs(names: Iterable[tuple[str, str]]) -> dict[str, str]:
    """mutmut's diff of each (module, mutant), read from the module's staged tree as `mutmut
    show` does."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    found: dict[str, str] = {}
    cwd = Path.cwd()
    try:
        for module, name in names:
            # mutmut reads the mutated file relative to the working directory.
            os.chdir(STAGE / module)
            dotted = name.partition("__mutmut_")[0].rsplit(".", 1)[0]
            found[name] = get_diff_for_mutant(
                name, path=Path(*dotted.split(".")).with_suffix(".py")
            )
    finally:
        os.chdir(cwd)
    return found


def changed_line(diff: str) -> str:
    """The mutated line(s) of a diff, whitespace-normalised: what EQUIVALENT_FILE records."""
    added = [line[1:] for line in diff.splitlines() if line[:1] == "+" and line[:3] != "+++"]
    return " ".join(" ".join(added).split())


def read_equivalents() -> list[Equivalent]:
    entries: list[Equivalent] = []
    if not EQUIVALENT_FILE.exists():
        return entries
    for i, raw in enumerate(EQUIVALENT_FILE.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(" | ", 2)]
        if len(parts) != 3 or not all(parts):
            raise SystemExit(f"{EQUIVALENT_FILE.name}:{i}: expected 'MUTANT | CHANGED LINE | WHY'")
        entries.append(Equivalent(parts[0], " ".join(parts[1].split()), parts[2], i))
    return entries


def function_of(name: str) -> str:
    return name.partition("__mutmut_")[0]


def apply_equivalents(
    results: list[Result], entries: list[Equivalent], diff_of: dict[str, str]
) -> tuple[set[str], list[str]]:
    """The mutants the list declares equivalent, and a message per stale entry.

    An entry names a mutant and the line it changes. When mutmut has renumbered the mutants of
    a function (because the function changed), the surviving mutant of that function with the
    same changed line is the one meant; when there is none, the entry is stale."""
    by_name = {r.name: r for r in results}
    modules_run = {function_of(r.name).rsplit(".", 1)[0] for r in results}
    equivalent: set[str] = set()
    stale: list[str] = []
    for e in entries:
        if function_of(e.name).rsplit(".", 1)[0] not in modules_run:
            continue  # a module this run did not mutate
        where = f"{EQUIVALENT_FILE.name}:{e.line}: {e.name}"
        same_function = sorted(
            r.name
            for r in results
            if function_of(r.name) == function_of(e.name) and r.status not in KILLED
        )
        match = next(
            (
                n
                for n in [e.name, *same_function]
                if n in diff_of and changed_line(diff_of[n]) == e.change
            ),
            None,
        )
        if match is None:
            stale.append(f"{where}: no such mutant changes the line to {e.change!r}")
        elif by_name[match].status in KILLED:
            stale.append(f"{where}: killed by the tests, so not equivalent")
        elif match in equivalent:
            stale.append(f"{where}: listed twice")
        else:
            equivalent.add(match)
    return equivalent, stale


def report(
    modules: Sequence[str],
    results: list[Result],
    equivalent: set[str],
    diff_of: dict[str, str],
    stale: list[str],
    elapsed: float,
) -> int:
    tallies = {m: Tally() for m in modules}
    for r in results:
        t = tallies[r.module]
        if r.status in KILLED:
            t.killed += 1
        elif r.name in equivalent:
            t.equivalent += 1
        else:
            t.survived += 1
            print(f"\n{r.status}: {r.name}")
            body = diff_of[r.name].splitlines()[2:]  # the ---/+++ lines only name the file
            print("\n".join("    " + line for line in body))
    total = Tally()
    for t in tallies.values():
        total.add(t)
    width = max(len(m) for m in [*tallies, "total"])
    print(f"\nscripts/mutate, {date.today().isoformat()}, {elapsed / 60:.1f} min")
    print(f"{'module':<{width}}  killed  survived  equivalent   score")
    for module, t in [*tallies.items(), ("total", total)]:
        flag = "" if t.score >= THRESHOLD or module == "total" else f"  below {THRESHOLD:.0%}"
        print(
            f"{module:<{width}}  {t.killed:>6}  {t.survived:>8}  {t.equivalent:>10}"
            f"  {t.score:>6.1%}{flag}"
        )
    for message in stale:
        print(f"stale equivalent entry: {message}")
    below = [m for m, t in tallies.items() if t.score < THRESHOLD]
    return 1 if below or stale else 0


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    modules = list(QUICK) if args.quick else (args.modules or list(MODULES))
    entries = read_equivalents()
    started = time.monotonic()
    results: list[Result] = []
    for module in modules:
        where = stage(module)
        log = "" if args.verbose else f" (log: {(where / 'mutmut.log').relative_to(ROOT)})"
        print(f"scripts/mutate: {module}, {args.jobs} worker(s){log}", flush=True)
        if not run_mutmut(where, args.jobs, args.verbose):
            print(f"scripts/mutate: mutmut failed on {module}", file=sys.stderr)
            return 2
        results += load_results(module, where)
    listed = {e.name for e in entries}
    wanted = {(r.module, r.name) for r in results if r.status not in KILLED or r.name in listed}
    diff_of = diffs(sorted(wanted))
    equivalent, stale = apply_equivalents(results, entries, diff_of)
    return report(modules, results, equivalent, diff_of, stale, time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
