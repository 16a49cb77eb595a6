"""Mutation testing of the modules where a silent bug costs most, one module at a time, and its score per module.

    python -m benchmarks.mutation_report --run              # every module (make mutate); minutes each
    python -m benchmarks.mutation_report --run tokens       # one module
    python -m benchmarks.mutation_report                    # the table of what mutants/ holds, without running

mutmut 3 (configured in pyproject.toml's [tool.mutmut]) copies the project into mutants/, mutates each function of
the modules it lists, and runs the tests of its selection that call that function. A mutant is *killed* when a test
fails (or it runs past mutmut's timeout: an endless loop is caught too), *survived* when every test passes, and has
*no tests* when no test of the selection calls its function. Survivors judged equivalent (no behaviour can tell
them from the original) are listed, each with its reason, in docs/mutation.md; the rest are missing tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
EQUIVALENTS = ROOT / "docs" / "mutation.md"
MODULES = {
    "preprocess": "app/preprocess.py",
    "tokens": "app/tokens.py",
    "middleware": "app/middleware.py",
    "protocol": "app/protocol.py",
    "errors": "app/errors.py",
    "handlers": "app/handlers.py",
    "admission": "app/admission.py",
    "batcher": "app/runtime/batcher.py",
    "process": "app/runtime/process.py",
    "dataplane": "app/dataplane.py",
    "explain": "app/explain.py",
    "reading": "app/reading.py",
}
# mutmut's exit codes (mutmut.stats.status_by_exit_code): 1 and 3 a test failed; 36 and the SIGXCPU codes a timeout.
KILLED = {1, 3}
TIMEOUT = {36, 24, -24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}
RUN_LIMIT_S = 15 * 60  # per module: other work shares the machine
SHOWN_SURVIVORS = 30


def mutant_prefix(path: str) -> str:
    """mutmut's name prefix for a module's mutants: app/runtime/batcher.py -> app.runtime.batcher."""
    return path.removesuffix(".py").replace("/", ".")


def run_module(path: str, children: int) -> int:
    """mutmut on one module's mutants; its exit status (124 when it ran past the limit)."""
    copy = MUTANTS / path
    if copy.exists() and not (MUTANTS / (path + ".meta")).exists():
        # Copied unmutated while the module was not configured yet: mutmut would take the copy as up to date and
        # find no mutant of it ("nothing matches").
        copy.unlink()
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(children), mutant_prefix(path) + ".*"]
    # Its own process group: past the limit, mutmut's workers (and the model processes they start) stop with it.
    run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        return run.wait(timeout=RUN_LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        return 124


def exit_codes(path: str) -> dict[str, int | None]:
    """Each mutant of a module and mutmut's exit code for it (None: not run yet)."""
    meta = MUTANTS / (path + ".meta")
    if not meta.exists():
        return {}
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    return codes


def status(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code in TIMEOUT:
        return "timeout"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no tests"
    return "not run" if code is None else "other"


def listed_equivalents() -> set[str]:
    """The mutant names docs/mutation.md lists as equivalent."""
    if not EQUIVALENTS.exists():
        return set()
    return set(re.findall(r"`(app\.[\w.ǁ]+__mutmut_\d+)`", EQUIVALENTS.read_text()))


def module_row(name: str, path: str, equivalent: set[str]) -> tuple[str, list[str]]:
    """The module's line of the table, and its survivors not listed as equivalent."""
    codes = exit_codes(path)
    counts = Counter(status(code) for code in codes.values())
    survivors = sorted(m for m, c in codes.items() if status(c) in ("survived", "no tests"))
    unexplained = [m for m in survivors if m not in equivalent]
    detected = counts["killed"] + counts["timeout"]
    total = len(codes) - counts["not run"]
    score = f"{100 * detected / total:5.1f}%" if total else "    -"
    line = (
        f"{name:<11} {detected:>4} / {total:<4} {score}   killed {counts['killed']}, timeout {counts['timeout']}, "
        f"survived {counts['survived']}, no tests {counts['no tests']}, not run {counts['not run']}; "
        f"survivors listed as equivalent {len(survivors) - len(unexplained)}, unexplained {len(unexplained)}"
    )
    return line, unexplained


def markdown_table(names: list[str]) -> str:
    """The per-module scores as the README's table."""
    equivalent = listed_equivalents()
    rows = ["| module | mutants | detected | score | survivors listed in docs/mutation.md | unexplained |"]
    rows.append("| --- | --- | --- | --- | --- | --- |")
    for name in names:
        codes = exit_codes(MODULES[name])
        run = [m for m, c in codes.items() if status(c) != "not run"]
        detected = sum(status(codes[m]) in ("killed", "timeout") for m in run)
        survivors = [m for m in run if status(codes[m]) in ("survived", "no tests")]
        listed = sum(m in equivalent for m in survivors)
        score = f"{100 * detected / len(run):.1f}%" if run else "-"
        rows.append(f"| `{MODULES[name]}` | {len(run)} | {detected} | {score} | {listed} | {len(survivors) - listed} |")
    return "\n".join(rows)


def report(names: list[str]) -> int:
    """Prints the per-module table; 1 when a module is under 85% or has an unexplained survivor."""
    equivalent, failing = listed_equivalents(), 0
    print(f"{'module':<11} {'detected':>11} {'score':>6}")
    unexplained_all = []
    for name in names:
        line, unexplained = module_row(name, MODULES[name], equivalent)
        print(line)
        unexplained_all += unexplained
        codes = exit_codes(MODULES[name])
        detected = sum(status(c) in ("killed", "timeout") for c in codes.values())
        run = sum(status(c) != "not run" for c in codes.values())
        failing += bool(unexplained) or (run > 0 and detected < 0.85 * run)
    for mutant in unexplained_all[:SHOWN_SURVIVORS]:
        print(f"  unexplained survivor: {mutant}   (python -m mutmut show {mutant})")
    if len(unexplained_all) > SHOWN_SURVIVORS:
        print(f"  ... and {len(unexplained_all) - SHOWN_SURVIVORS} more (python -m mutmut results)")
    return 1 if failing else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"modules to report (default: all): {', '.join(MODULES)}")
    parser.add_argument("--run", action="store_true", help="run mutmut on each module first (under 15 min each)")
    parser.add_argument("--children", type=int, default=2, help="mutants tested in parallel")
    parser.add_argument("--markdown", action="store_true", help="print the scores as the README's table")
    args = parser.parse_args()
    names = args.modules or list(MODULES)
    unknown = [name for name in names if name not in MODULES]
    if unknown:
        parser.error(f"unknown module {unknown[0]!r}; choose from {', '.join(MODULES)}")
    if args.run:
        # mutmut records which tests call which function once, and later only for tests with new names: a test
        # changed since would keep its old record (and a mutant it now kills would be run against other tests).
        (MUTANTS / "mutmut-stats.json").unlink(missing_ok=True)
        for name in names:
            code = run_module(MODULES[name], args.children)
            print(f"mutmut on {MODULES[name]}: exit status {code}", flush=True)
    if args.markdown:
        print(markdown_table(names))
        return
    sys.exit(report(names))


if __name__ == "__main__":
    main()
