"""Count the outcomes of the malformed-input corpus and of the property-based tests (issue 20).

Runs every case of ``tests/corpus/`` through ``ranker.cli.main`` (as ``tests/test_corpus.py``
does) and classifies what the user saw:

- ``error``: exit 2 with one ``error:`` line holding the case's words;
- ``warning``: exit 0 with a ``warning:`` line holding the case's words;
- ``unusable``: exit 3 (trained, but the result is not usable) with the case's words;
- ``traceback``: a Python traceback or an "unexpected" error (exit 1);
- ``silent``: exit 0 where the case expects an error or a warning that never came;
- ``other``: any other mismatch (wrong exit status, words missing).

Then runs ``tests/test_properties.py`` with hypothesis statistics and records each test's
passing / failing example counts. Writes ``benchmarks/results/bad-input.json`` (one record per
corpus group, one per property test); ``python benchmarks/update_tables.py`` renders the tables
of ``docs/experiments/bad-input.md``.

Usage (from the repository root, about 5 minutes on 2 cores):
    RANKER_DATA_DIR=../shared/data python benchmarks/corpus_report.py
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml
from results_store import save_result  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from corpus_harness import CORPUS, Trained, case_id, cases, check, run_case  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bad-input.json"
OUTCOMES = ("error", "warning", "unusable", "traceback", "silent", "other")


def classify(spec: dict, code: int, err: str, problems: list[str]) -> str:
    """One of OUTCOMES for a case's run (see the module docstring)."""
    if "Traceback" in err or "unexpected" in err or code == 1:
        return "traceback"
    if problems:  # exit 0 without the expected error or warning is a silent answer
        return "silent" if code == 0 else "other"
    return {2: "error", 0: "warning", 3: "unusable"}.get(code, "other")


def run_corpus(work: Path) -> tuple[dict[str, Counter[str]], list[str]]:
    counts: dict[str, Counter[str]] = {}
    failures = []
    trained = Trained(work / "runs")
    paths = cases()
    for i, path in enumerate(paths, 1):
        spec = yaml.safe_load(path.read_text())
        outcome = run_case(spec, work / f"case-{i}", trained)
        problems = check(spec, outcome)
        group = path.relative_to(CORPUS).parts[0]
        kind = classify(spec, outcome.code, outcome.err, problems)
        counts.setdefault(group, Counter())[kind] += 1
        if problems:
            failures.append(f"{case_id(path)}: {kind}: {problems}")
        if i % 50 == 0:
            print(f"{i}/{len(paths)} cases", flush=True)
    return counts, failures


STAT = re.compile(r"^\s*-\s+(\d+) passing, (\d+) failing, and (\d+) invalid test cases")


def run_properties() -> dict[str, dict[str, int]]:
    """Each property test's passing / failing / invalid examples (hypothesis statistics)."""
    cmd = [sys.executable, "-m", "pytest", "tests/test_properties.py", "-q", "-p", "no:cacheprovider"]
    proc = subprocess.run([*cmd, "--hypothesis-show-statistics"], cwd=ROOT, capture_output=True, text=True, check=False)
    stats: dict[str, dict[str, int]] = {}
    test = None
    for line in proc.stdout.splitlines():
        m = re.match(r"^tests/test_properties\.py::(\S+):$", line)
        if m:
            test = m.group(1)
        s = STAT.match(line)
        if s and test:  # one line per phase (explicit, reuse, generate, …): summed
            got = stats.setdefault(test, {"passing": 0, "failing": 0, "invalid": 0})
            for k, v in zip(("passing", "failing", "invalid"), s.groups(), strict=True):
                got[k] += int(v)
    if proc.returncode != 0:
        stats["pytest exit status"] = {"passing": 0, "failing": proc.returncode, "invalid": 0}
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-properties", action="store_true")
    ap.add_argument("--only-properties", action="store_true", help="rerun the property tests alone")
    args = ap.parse_args()
    counts: dict[str, Counter[str]] = {}
    failures: list[str] = []
    if not args.only_properties:
        with tempfile.TemporaryDirectory() as tmp:
            counts, failures = run_corpus(Path(tmp))
    for group, c in sorted(counts.items()):
        save_result(RESULTS, f"corpus|{group}", {k: c.get(k, 0) for k in OUTCOMES}, name=group, config="tests/corpus")
    total: Counter[str] = sum(counts.values(), Counter())
    if counts:
        print("corpus:", sum(total.values()), "cases;", ", ".join(f"{k} {total.get(k, 0)}" for k in OUTCOMES))
    for line in failures:
        print("  FAILED", line)
    if not args.skip_properties:
        for test, st in run_properties().items():
            save_result(RESULTS, f"hypothesis|{test}", st, name=test, config="tests/test_properties.py")
            print(f"hypothesis {test}: {st}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
