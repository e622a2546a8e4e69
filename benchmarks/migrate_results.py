"""Migrate the legacy results files of ``benchmarks/results/`` into the one layout.

Usage (from the repository root):
    python benchmarks/migrate_results.py [--check] [FILE ...]

The layout is defined in ``benchmarks/results_store.py``. Before issue 17 the files had three
layouts: ``{"name|seed": run metrics}`` (grids, retrieval, distillation, fine-tuning, scaling),
``{dataset, seeds, runs: [...]}`` / ``{config, features, runs: {...}}`` (baselines, LightGBM)
and one-off documents (ANN, generative ranking). Every run becomes a record with its metrics
unchanged; file-level fields that are not runs go to ``notes``.

Provenance is recovered, never invented:
- commit and date: the commit that first added the record's key to the file (``git log`` of
  the file, oldest first; files that are one document: the commit that added the file). That
  commit recorded the result; the code that produced it is at most that recent.
- command: the command of BENCHMARKS.md's code block for that study (``COMMANDS`` below),
  ``"unknown"`` where the docs give none.
- machine: what the file recorded, else "2-core CPU (dev box)" (plus the torch thread count
  where the run recorded it).
Files already in the layout are left as they are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from results_store import (  # noqa: E402  # type: ignore[import-not-found]
    DEV_BOX,
    SOURCE_MIGRATED,
    UNKNOWN,
    is_current,
    make_record,
    new_document,
    protocol_of,
    write_document,
)

ENV = "RANKER_DATA_DIR=../shared/data RANKER_THREADS=1 "


def _grid(name: str) -> str:
    return f"{ENV}python benchmarks/run_grid.py benchmarks/grids/{name}.yaml"


_DISTILL = (
    "T='runs/grid/mtl-best-rk-ml100k/mmoe--4-experts-128-64--towers-32-{seed}'; "
    f'{ENV}python benchmarks/distill_rk.py --teacher-runs "$T" [--student CONFIG --label LABEL]'
)
_RETRIEVAL_ML100K = (
    f"{ENV}python benchmarks/run_retrieval.py benchmarks/configs/retrieval-hstu-r-ml100k.yaml "
    "benchmarks/configs/retrieval-sasrec-r-ml100k.yaml benchmarks/configs/retrieval-hstu-large-r-ml100k.yaml "
    "--out runs/retrieval"
)

# The command of BENCHMARKS.md's code block for each study (file stem). Placeholders in
# capitals (CONFIG, LABEL, ...) stand where the block says "likewise ..." for other rows.
COMMANDS: dict[str, str] = {
    **{
        f"baseline-{d}": "RANKER_DATA_DIR=../shared/data python benchmarks/run_baselines.py"
        for d in ("c-frappe", "mt-census", "rk-ml100k", "t-adult")
    },
    **{
        f"grid-{g}": _grid(g)
        for g in (
            "c-frappe-search",
            "dcn-c-frappe-bars",
            "dcn-rk-ml100k",
            "history-rk-ml100k",
            "memory-c-frappe",
            "memory-mt-census",
            "mtl-best-rk-ml100k",
            "mtl-mt-census",
            "mtl-rk-ml100k",
            "numerical-mt-census",
            "numerical-t-adult",
        )
    },
    # No code block: the text names the grid file, which only run_grid.py runs.
    "grid-dcn-c-frappe": _grid("dcn-c-frappe"),
    "finetune-rk-ml100k": f"{ENV}python benchmarks/finetune_rk.py --encoders embedding unified hashing",
    "gbdt-mt-census": "python benchmarks/gbdt_reference.py benchmarks/configs/mtl-mt-census.yaml",
    "distill-rk-ml100k": _DISTILL,
    "distill-alpha-rk-ml100k": _DISTILL + " --alpha A --out runs/distill-aA "
    "--results benchmarks/results/distill-alpha-rk-ml100k.json --distilled-only",
    "retrieval-r-ml100k": _RETRIEVAL_ML100K,
    "retrieval-r-ml100k-ablations": (
        f"{ENV}python benchmarks/run_retrieval.py benchmarks/configs/retrieval-hstu-r-ml100k.yaml "
        "--seeds 2021 --results-suffix=-ablations --set name=NAME --set OVERRIDES"
    ),
    "ann-r-ml100k": "python benchmarks/ann_retrieval.py runs/retrieval/hstu-r-ml100k-2021",
    "retrieval-r-ml1m": (
        f"{ENV}python benchmarks/run_retrieval.py benchmarks/configs/retrieval-sasrec-r-ml1m.yaml "
        "benchmarks/configs/retrieval-hstu-r-ml1m.yaml benchmarks/configs/retrieval-hstu-large-r-ml1m.yaml "
        "--seeds 2021 2022 2023 --out runs/retrieval"
    ),
    "retrieval-r-beauty": (
        f"{ENV}python benchmarks/run_retrieval.py benchmarks/configs/retrieval-hstu-r-beauty.yaml "
        "benchmarks/configs/retrieval-sasrec-r-beauty.yaml --seeds 2021 2022 2023 "
        "[--set name=NAME --set OVERRIDES]"
    ),
    "scaling-r-ml1m": f"{ENV}python benchmarks/scaling_hstu.py --layers 1 2 4 8 --users 0.25 0.5 1.0",
    "generative-rk-ml100k": "python benchmarks/collect_generative.py runs/issue8/gen-hstu-s*",
    "compare-generative-rk-ml100k": (
        'python benchmarks/compare_generative.py --group "generative HSTU=runs/issue8/gen-hstu-s*" '
        '--group "TransAct + MLP=runs/grid/history-rk-ml100k/transact-202?" '
        '--group "TransAct + MMoE=runs/grid/mtl-best-rk-ml100k/mmoe--4-experts-128-64--towers-32-*" '
        '--group "TransAct + DCN-V2 4 + MMoE=runs/grid/mtl-best-rk-ml100k/transact---dcn*" '
        '--group "MLP + mean pool (baseline)=runs/grid/dcn-rk-ml100k/mlp--foundation-baseline-*"'
    ),
    "generative-candidates": "python benchmarks/generative_candidates.py --run runs/issue8/gen-hstu-s2021",
}

CONFIGS: dict[str, str] = {
    **{
        f"baseline-{d}": f"benchmarks/configs/baseline-{d}.yaml"
        for d in ("c-frappe", "mt-census", "rk-ml100k", "t-adult")
    },
    "gbdt-mt-census": "benchmarks/configs/mtl-mt-census.yaml",
    "generative-rk-ml100k": "benchmarks/configs/generative-hstu-rk-ml100k.yaml",
    "generative-candidates": "benchmarks/configs/generative-hstu-rk-ml100k.yaml",
}


def config_of(stem: str, key: str) -> str | None:
    """The config (or grid) file that describes the record, where one is named unambiguously."""
    if stem in CONFIGS:
        return CONFIGS[stem]
    if stem.startswith("grid-") and (HERE / "grids" / f"{stem[5:]}.yaml").is_file():
        return f"benchmarks/grids/{stem[5:]}.yaml"
    name = key.split("|")[0]
    if stem.startswith("retrieval-") and (HERE / "configs" / f"retrieval-{name}.yaml").is_file():
        return f"benchmarks/configs/retrieval-{name}.yaml"
    return None


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True, check=True).stdout


def history(path: Path) -> list[tuple[str, str]]:
    """(commit, UTC date) of every commit that touched the file, oldest first."""
    rel = path.resolve().relative_to(HERE.parent.resolve())
    out = []
    for line in git("log", "--reverse", "--format=%H %aI", "--", str(rel)).splitlines():
        commit, date = line.split()
        utc = dt.datetime.fromisoformat(date).astimezone(dt.timezone.utc)
        out.append((commit, utc.isoformat(timespec="seconds")))
    return out


def entries(doc: Any, stem: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Legacy document → ({key: record fields}, notes, file-level provenance overrides)."""
    notes: dict[str, Any] = {}
    prov: dict[str, Any] = {}
    out: dict[str, dict[str, Any]] = {}
    if isinstance(doc, dict) and isinstance(doc.get("runs"), list):  # run_baselines.py
        for run in doc["runs"]:
            out[f"baseline|{run['seed']}"] = {"metrics": run, "name": "baseline", "seed": run["seed"]}
        notes = {k: v for k, v in doc.items() if k not in ("runs", "machine", "date")}
        if "machine" in doc:
            prov["machine"] = doc["machine"]
        if "date" in doc:
            prov["date"] = doc["date"]
    elif isinstance(doc, dict) and isinstance(doc.get("runs"), dict) and stem.startswith("gbdt-"):
        out = {k: {"metrics": v} for k, v in doc["runs"].items()}
        notes = {k: v for k, v in doc.items() if k != "runs"}
    elif stem.startswith("generative-rk"):
        for run_dir, m in doc["runs"].items():
            out[run_dir] = {"metrics": m, "name": "generative HSTU", "seed": m.get("seed")}
        notes = {k: v for k, v in doc.items() if k != "runs"}
    elif stem.startswith("compare-generative"):
        for group, runs in doc.items():
            if group.startswith("_"):
                notes[group] = runs
                continue
            for run_dir, m in runs.items():
                seed = re.search(r"(20\d\d)$", run_dir)
                out[f"{group}|{run_dir}"] = {
                    "metrics": {"run_dir": run_dir, **m},
                    "name": group,
                    "seed": int(seed.group(1)) if seed else None,
                }
    elif stem.startswith("ann-"):
        seed = re.search(r"(20\d\d)$", doc.get("run_dir", ""))
        out["hstu item index"] = {
            "metrics": doc,
            "name": "hstu item index",
            "seed": int(seed.group(1)) if seed else None,
        }
    elif stem == "generative-candidates":
        out["generative HSTU serving"] = {"metrics": doc, "name": "generative HSTU serving", "seed": None}
        prov["machine"] = f"{DEV_BOX}, {doc.get('machine', UNKNOWN)}, {doc.get('threads', '?')} torch thread(s)"
    else:  # {"name|seed": metrics}
        out = {k: {"metrics": v} for k, v in doc.items()}
    return out, notes, prov


def legacy_keys(text: str, stem: str) -> set[str]:
    try:
        return set(entries(json.loads(text), stem)[0])
    except Exception:  # noqa: BLE001 - an old version in yet another shape: no keys from it
        return set()


def migrate(path: Path) -> dict[str, Any] | None:
    doc = json.loads(path.read_text())
    if is_current(doc):
        return None
    stem = path.stem
    items, notes, file_prov = entries(doc, stem)
    hist = history(path)
    rel = str(path.resolve().relative_to(HERE.parent.resolve()))
    added: dict[str, tuple[str, str]] = {}
    for commit, date in hist:
        try:
            text = git("show", f"{commit}:{rel}")
        except subprocess.CalledProcessError:  # the commit removed or renamed the file
            continue
        for key in legacy_keys(text, stem):
            added.setdefault(key, (commit, date))
    first = hist[0] if hist else (UNKNOWN, UNKNOWN)
    protocol = "RK-ML100K" if stem == "generative-candidates" else protocol_of(stem)
    out = new_document(stem, protocol, source=SOURCE_MIGRATED, notes=notes or None)
    for key, fields in items.items():
        metrics = fields["metrics"]
        commit, date = added.get(key, first)
        threads = metrics.get("threads") if isinstance(metrics, dict) else None
        prov = {
            "command": COMMANDS.get(stem, UNKNOWN),
            "commit": commit,
            "date": date,
            "machine": DEV_BOX + (f", {threads} torch thread(s)" if threads else ""),
            "recovered_from": "git log of the file (commit that first recorded the key); command from BENCHMARKS.md",
        }
        prov.update(file_prov)
        extra = {k: v for k, v in fields.items() if k in ("name", "seed")}
        rec = make_record(key, metrics, prov=prov, config=config_of(stem, key), **extra)
        if rec["protocol"] == UNKNOWN:
            rec["protocol"] = out["protocol"]
        out["records"].append(rec)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--check", action="store_true", help="only list files still in a legacy layout")
    args = ap.parse_args()
    files = args.files or sorted((HERE / "results").glob("*.json"))
    legacy = []
    for path in files:
        new = migrate(path)
        if new is None:
            continue
        legacy.append(path.name)
        if not args.check:
            write_document(path, new)
            print(f"{path.name}: {len(new['records'])} records")
    if args.check:
        print("legacy: " + (", ".join(legacy) or "none"))
        sys.exit(1 if legacy else 0)


if __name__ == "__main__":
    main()
