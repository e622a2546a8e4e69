"""Regenerate the marked tables of BENCHMARKS.md from the results JSON files.

Usage (from the repository root):
    python benchmarks/update_tables.py [--check]

A table is the text between ``<!-- table:NAME -->`` and ``<!-- /table -->``. NAME is a grid
(``benchmarks/grids/NAME.yaml``: the rows of ``run_grid.py NAME.yaml --table-only``),
``finetune`` (``finetune_rk.py``'s table), ``retrieval-DATASET[-SUFFIX]`` (``run_retrieval.py``'s
table of ``results/retrieval-DATASET[-SUFFIX].json``) or ``scaling-DATASET`` (``scaling_hstu.py``). The header lines above a marker are prose and are
left alone. ``--check`` only reports which tables would change (exit 1 if any).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import finetune_rk  # noqa: E402
import run_retrieval  # noqa: E402
import scaling_hstu  # noqa: E402
from results_store import load_results  # noqa: E402  # type: ignore[import-not-found]
from run_grid import table as grid_table  # noqa: E402

MARKER = re.compile(r"(<!-- table:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(\n<!-- /table -->)", re.S)


def render(name: str) -> str | None:
    if name == "finetune":
        path = HERE / "results" / "finetune-rk-ml100k.json"
        return finetune_rk.table(load_results(path)) if path.is_file() else None
    if name.startswith(("retrieval-", "scaling-")):
        path = HERE / "results" / f"{name}.json"
        if not path.is_file():
            return None
        results = load_results(path)
        if name.startswith("scaling-"):
            return scaling_hstu.table(scaling_hstu.rows(results))
        return run_retrieval.table(results)
    grid = HERE / "grids" / f"{name}.yaml"
    results = HERE / "results" / f"grid-{name}.json"
    if not grid.is_file() or not results.is_file():
        return None
    return grid_table(grid, load_results(results)) or None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=HERE.parent / "BENCHMARKS.md")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    text = args.file.read_text()
    changed: list[str] = []

    def replace(m: re.Match[str]) -> str:
        body = render(m["name"])
        if body is None:
            print(f"{m['name']}: no grid/results found, left as is", file=sys.stderr)
            return m.group(0)
        if body != m["body"]:
            changed.append(m["name"])
        return m.group(1) + body + m.group(4)

    new = MARKER.sub(replace, text)
    print("changed: " + (", ".join(changed) or "nothing"))
    if args.check:
        sys.exit(1 if changed else 0)
    args.file.write_text(new)


if __name__ == "__main__":
    main()
