"""Turn a hand-typed table of BENCHMARKS.md into a results file and a generated table.

Usage (from the repository root; used once per table in issue 17):
    python benchmarks/transcribe_table.py --header "| encoder | events L |" --name NAME \
        --protocol RK-ML100K --command "python benchmarks/history_serving.py" [--rows 6:9] \
        [--marker MARKER] [--doc BENCHMARKS.md]

For tables whose figures have no results file (timings printed by a script, a demo): the rows
are stored as they were recorded in ``benchmarks/results/transcribed-NAME.json`` (layout of
``results_store.py``, ``source: "transcribed from BENCHMARKS.md"``; each record's metrics are
the row's cells, and its provenance commit/date is the commit that added that row to the doc,
found with ``git log -S``), and the rows in the doc are wrapped in
``<!-- table:transcribed-NAME -->`` markers (or ``--marker``) so update_tables.py renders them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from results_store import DEV_BOX, SOURCE_TRANSCRIBED, UNKNOWN, make_record, new_document, write_document  # noqa: E402  # type: ignore[import-not-found]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


def added_by(text: str, doc: Path) -> tuple[str, str]:
    """(commit, UTC date) of the first commit whose doc contained ``text``."""
    out = subprocess.run(
        ["git", "log", "--reverse", "--format=%H %aI", "-S", text, "--", doc.name],
        cwd=doc.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")[0]
    if not out:
        return UNKNOWN, UNKNOWN
    commit, date = out.split()
    return commit, dt.datetime.fromisoformat(date).astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--doc", type=Path, default=HERE.parent / "BENCHMARKS.md")
    ap.add_argument("--header", required=True, help="a unique substring of the table's header line")
    ap.add_argument("--name", required=True)
    ap.add_argument("--protocol", default=UNKNOWN)
    ap.add_argument("--command", default=UNKNOWN)
    ap.add_argument("--machine", default=DEV_BOX)
    ap.add_argument("--config", default=None)
    ap.add_argument("--rows", default=None, help="START:END slice of the data rows to transcribe")
    ap.add_argument("--marker", default=None, help="marker name (default transcribed-NAME)")
    ap.add_argument("--note", default=None)
    ap.add_argument("--nth", type=int, default=None, help="which of several tables with this header")
    args = ap.parse_args()
    lines = args.doc.read_text().split("\n")
    starts = [i for i, line in enumerate(lines) if args.header in line]
    if args.nth is not None:
        starts = starts[args.nth : args.nth + 1]
    if len(starts) != 1:
        raise SystemExit(f"header found {len(starts)} times")
    head = starts[0]
    if lines[head - 1].startswith("<!-- table:") or lines[head + 2].startswith("<!-- table:"):
        raise SystemExit("already generated")
    end = head + 2
    while end < len(lines) and lines[end].strip().startswith("|"):
        end += 1
    body = list(range(head + 2, end))
    if args.rows:
        a, b = (int(x) if x else None for x in args.rows.split(":"))
        body = body[a:b]
    name = f"transcribed-{args.name}"
    notes = {"columns": cells(lines[head])}
    if args.note:
        notes["note"] = args.note
    out = new_document(name, args.protocol, source=SOURCE_TRANSCRIBED, notes=notes)
    for i in body:
        row = cells(lines[i])
        commit, date = added_by(lines[i].strip(), args.doc)
        prov = {
            "command": args.command,
            "commit": commit,
            "date": date,
            "machine": args.machine,
            "recovered_from": "git log -S of the row in BENCHMARKS.md; command from its text",
        }
        key = row[0] if row[0] not in {r["key"] for r in out["records"]} else " | ".join(row[:3])
        out["records"].append(
            make_record(
                key, {"cells": row}, prov=prov, name=row[0], seed=None, protocol=args.protocol, config=args.config
            )
        )
    write_document(HERE / "results" / f"{name}.json", out)
    indent = lines[body[0]][: len(lines[body[0]]) - len(lines[body[0]].lstrip())]
    if indent:
        raise SystemExit("indented tables (inside a list item) are not supported")
    if args.marker != "none":
        lines.insert(body[-1] + 1, "<!-- /table -->")
        lines.insert(body[0], f"<!-- table:{args.marker or name} -->")
        args.doc.write_text("\n".join(lines))
    print(f"{name}: {len(body)} rows")


if __name__ == "__main__":
    main()
