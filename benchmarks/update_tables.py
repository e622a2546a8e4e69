"""Regenerate every results table of the docs from the results files (``benchmarks/results/``).

Usage (from the repository root):
    python benchmarks/update_tables.py [--check] [--file DOC.md ...]

A generated table is the text between ``<!-- table:NAME -->`` and ``<!-- /table -->`` in
BENCHMARKS.md, docs/RESULTS.md or docs/experiments/*.md. The header lines above a marker are
prose and are left alone (except where the renderer writes its own header). NAME is one of:

- a grid (``benchmarks/grids/NAME.yaml``: the rows of ``run_grid.py NAME.yaml --table-only``
  from ``results/grid-NAME.json``); ``mtl-rk-ml100k`` adds the best epochs and the bold cells;
- ``finetune`` (``finetune_rk.py``'s table), ``retrieval-DATASET[-SUFFIX]``
  (``run_retrieval.py``'s table of ``results/retrieval-DATASET[-SUFFIX].json``),
  ``scaling-DATASET`` (``scaling_hstu.py``), ``two-stage-DATASET`` (``two_stage.py``'s table of
  ``results/two-stage-DATASET.json``), ``ensemble-DATASET`` (``stage1_ensemble.py``'s table of
  ``results/ensemble-DATASET.json``);
- ``baseline`` (``results/baseline-*.json``), ``most-popular`` (the most-popular floor stored in
  each ``results/retrieval-r-*.json``), ``ablations-r-ml100k`` (HSTU ablations of
  ``results/retrieval-r-ml100k-ablations.json``), ``ann-r-ml100k``, ``generative-compare`` and
  ``generative-by-user`` (``results/compare-generative-rk-ml100k.json``),
  ``generative-serving`` (``results/generative-candidates.json`` + the feature rankers' rows),
  ``history-row-transact`` (the history grid's TransAct row, relabelled), ``levers-r-ml1m`` (every
  stage-1 lever on R-ML1M beside its run without it, ``LEVERS_R_ML1M``), ``distill-rk-ml100k``
  (``results/distill-*.json``; candidates/s from ``results/transcribed-distill-rk-ml100k.json``);
- ``serve-recommend``, ``serve-stages``, ``serve-score``, ``serve-events``, ``serve-provenance``:
  the service's speed (``serve_bench.py``, ``results/serve-latency.json``; with the suffix
  ``-ml1m``, e.g. ``serve-recommend-ml1m``, ``results/serve-latency-ml1m.json``); before that file
  exists each renders one row "not measured yet" (the tables are in place, the figures come
  with the run);
- ``score-designs``, ``score-designs-parts``, ``score-designs-http``, ``score-designs-provenance``: the /score serving
  designs, quality beside latency (``score_designs.py``, ``results/score-designs.json``);
- ``scale-rss``: peak RSS vs train rows, streamed and in memory (``scale_rss.py``,
  ``results/scale-rss.json``); ``ddp-speed``: samples/s per processes × threads
  (``ddp_speed.py``, ``results/ddp-speed.json``); ``torchrec-memory`` / ``torchrec-oom``: a sharded
  table's memory per rank, and the rows at which a rank reaches 24 GiB, computed from it
  (``torchrec_memory.py``, ``results/torchrec-memory.json``);
- ``transcribed-NAME``: ``results/transcribed-NAME.json``, a table whose figures were typed into
  BENCHMARKS.md without a results file; the file keeps each row's cells as they were recorded
  (``source: "transcribed from BENCHMARKS.md"``);
- ``summary`` / ``summary-root``: one row per protocol (``SUMMARY`` below), for docs/RESULTS.md /
  BENCHMARKS.md (the links differ).

``--check`` writes nothing and exits 1 if any table differs from what the generator produces
(tests/test_results_tables.py runs it, so tables cannot drift from their results files).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

import finetune_rk  # noqa: E402
import run_retrieval  # noqa: E402
import scaling_hstu  # noqa: E402
import stage1_ensemble  # noqa: E402
import two_stage  # noqa: E402
from results_store import UNKNOWN, load_results, records  # noqa: E402  # type: ignore[import-not-found]
from run_grid import table as grid_table  # noqa: E402

# An empty body (a table not generated yet) must not run on to the next table's end marker.
MARKER = re.compile(r"(<!-- table:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(\n?<!-- /table -->)", re.S)


def docs() -> list[Path]:
    """Every document whose tables are generated."""
    files = [ROOT / "BENCHMARKS.md", ROOT / "docs" / "RESULTS.md"]
    files += sorted((ROOT / "docs" / "experiments").glob("*.md"))
    return [f for f in files if f.is_file()]


def pm(vals: list[float], digits: int = 4) -> str:
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals):.{digits}f}"


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def by_name(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Records of a file grouped by name, in file order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records(path):
        out.setdefault(r["name"], []).append(r)
    return out


# --- renderers of tables whose results files have their own shape -------------------------

BASELINE_ORDER = ("rk-ml100k", "c-frappe", "t-adult", "mt-census")


def baseline() -> str:
    lines = []
    for dataset in BASELINE_ORDER:
        recs = records(RESULTS / f"baseline-{dataset}.json")
        runs = [r["metrics"] for r in recs]
        protocol = recs[0]["protocol"]
        speed = np.mean([r["train_samples_per_s"] for r in runs])
        epochs = "/".join(str(r["best_epoch"]) for r in runs)
        for task in runs[0]["test"]:
            cells = [protocol, task]
            for key in ("auc", "gauc", "logloss", "accuracy"):
                vals = [r["test"][task].get(key) for r in runs]
                cells.append("–" if any(v is None for v in vals) else pm(vals))
            base = [r["baseline"]["test"][task]["auc"] for r in runs]
            # No item column: the popularity baseline is a constant (AUC 0.5), shown as "–".
            cells.append("–" if np.allclose(base, 0.5) else f"{np.mean(base):.4f}")
            cells += [f"{runs[0]['params']:,}", f"{speed:,.0f}", epochs]
            lines.append(row(cells))
    return "\n".join(lines)


MOST_POPULAR = (("r-ml100k", "R-ML100K"), ("r-ml1m", "R-ML1M (offline sequences)"), ("r-beauty", "R-Beauty"))


def most_popular() -> str:
    lines = []
    for dataset, label in MOST_POPULAR:
        run = next(iter(load_results(RESULTS / f"retrieval-{dataset}.json").values()))
        pop = run["most_popular"]["test"]
        lines.append(
            row(
                [
                    label,
                    f"{run['users']:,}",
                    f"{run['items']:,}",
                    *(f"{pop[c]:.4f}" for c in ("HR@10", "NDCG@10", "HR@50", "NDCG@50", "HR@200", "MRR")),
                ]
            )
        )
    return "\n".join(lines)


ABLATIONS_R_ML100K = (
    ("128 sampled negatives, one set per batch", "hstu-sampled-softmax"),
    ("128 sampled negatives per row (the reference's sampler)", "hstu-sampled-per-row"),
    ("128 sampled negatives per sequence", "hstu-sampled-per-sequence"),
    ("full softmax (the shipped config)", "hstu-full-softmax"),
    ("sampled, no time bias (position bias only)", "hstu-no-time-bias"),
    ("sampled, query time = own event's time", "hstu-query-time-last"),
)


def ablations_r_ml100k() -> str:
    results = load_results(RESULTS / "retrieval-r-ml100k-ablations.json")
    lines = []
    for label, name in ABLATIONS_R_ML100K:
        m = results[f"{name}|2021"]
        cells = [
            label,
            *(f"{m['test'][c]:.4f}" for c in ("HR@10", "NDCG@10", "HR@50", "NDCG@50", "HR@200", "MRR")),
            f"{m['valid']['NDCG@10']:.4f}",
            f"{m['best_epoch']} / {m['stopped_epoch']}",
            f"{m['seconds_per_epoch']:.1f}",
        ]
        lines.append(row(cells))
    return "\n".join(lines)


def ann_r_ml100k() -> str:
    doc = records(RESULTS / "ann-r-ml100k.json")[0]["metrics"]
    exact = [r["exact_qps"] for r in doc["rows"]]
    lines = [
        row(
            [
                "exact (batched matrix product)",
                "–",
                "1.0000",
                f"{round(min(exact), -3):,.0f}–{round(max(exact), -3):,.0f}",
            ]
        )
    ]
    for r in doc["rows"]:
        if r["index"] == "hnsw":
            kind, setting = "HNSW", f"M {r['hnsw_m']}, efSearch {r['ef_search']}"
        else:
            kind = "IVF-Flat"
            setting = f"{r['nlist']} lists, nprobe {r['nprobe']}" + (" (all)" if r["nprobe"] == r["nlist"] else "")
        lines.append(row([kind, setting, f"{r['recall']:.4f}", f"{r['qps']:,.0f}"]))
    return "\n".join(lines)


def _generative_groups() -> dict[str, list[dict[str, Any]]]:
    return {
        name: [r["metrics"] for r in recs]
        for name, recs in by_name(RESULTS / "compare-generative-rk-ml100k.json").items()
    }


def generative_compare() -> str:
    lines = []
    for name, runs in _generative_groups().items():
        cells = [
            name,
            *(pm([r["test"][t][m] for r in runs]) for t in ("watch", "like") for m in ("auc", "gauc")),
            pm([r["test"]["watch"]["logloss"] for r in runs]),
            f"{runs[0]['params']:,}",
            f"{np.mean([r['train_time_s'] for r in runs]):,.0f}",
            "/".join(str(r["best_epoch"]) for r in runs),
            str(len(runs)),
        ]
        lines.append(row(cells))
    return "\n".join(lines)


def generative_by_user() -> str:
    return "\n".join(
        row([name, *(pm([r["split"][k] for r in runs]) for k in ("watch/seen", "watch/new", "like/seen", "like/new"))])
        for name, runs in _generative_groups().items()
    )


GENERATIVE_MODES = (
    (
        "kv_cache",
        "M-FALCON with the history KV cache (default): history encoded once, candidates "
        "attend to its cached keys/values and themselves",
    ),
    ("kv_cache_256", "the same, micro-batches of 256 candidates"),
    ("one_pass", "candidates appended to the sequence, one pass (N + 1,000 tokens)"),
    ("microbatch_256", "appended, micro-batches of 256 (history re-encoded per batch)"),
    ("separate_loop", "1,000 separate passes (history + 1 candidate), one after another"),
    ("separate_batched", "1,000 separate passes as one batch"),
)


def generative_serving() -> str:
    gen = records(RESULTS / "generative-candidates.json")[0]["metrics"]["modes"]
    lines = [
        row(["generative HSTU", label, f"{gen[mode]['candidates_per_s']:,.0f}"]) for mode, label in GENERATIVE_MODES
    ]
    # The feature rankers' figures (score_candidates.py) have no results file of their own.
    for r in records(RESULTS / "transcribed-generative-serving-feature-rankers.json"):
        lines.append(row(r["metrics"]["cells"]))
    return "\n".join(lines)


def history_row_transact() -> str:
    grid = HERE / "grids" / "history-rk-ml100k.yaml"
    results = {
        k: v for k, v in load_results(RESULTS / "grid-history-rk-ml100k.json").items() if k.split("|")[0] == "TransAct"
    }
    line = grid_table(grid, results)
    return line.replace("| TransAct |", '| shared bottom (= history grid "TransAct") |', 1)


# Distillation: row → (results file, record name). The quality, parameter and samples/s cells are
# computed from those files; the labels, the bold cells and the candidates/s column (timed by
# score_candidates.py, which writes no results file) come from the transcribed file.
DISTILL_ROWS = (
    ("distill-rk-ml100k", "teacher"),
    ("distill-rk-ml100k", "student mean-pool alone"),
    ("distill-rk-ml100k", "student mean-pool distilled"),
    ("distill-alpha-rk-ml100k", "student mean-pool α=0.2 distilled"),
    ("distill-alpha-rk-ml100k", "student mean-pool α=0.0 distilled"),
    ("distill-rk-ml100k", "student mean+recent alone"),
    ("distill-rk-ml100k", "student mean+recent distilled"),
    ("distill-alpha-rk-ml100k", "student mean+recent α=0.2 distilled"),
    ("distill-alpha-rk-ml100k", "student mean+recent α=0.0 distilled"),
    ("distill-rk-ml100k", "student alone"),
    ("distill-rk-ml100k", "student distilled"),
)


def distill_rk_ml100k() -> str:
    typed = records(RESULTS / "transcribed-distill-rk-ml100k.json")
    assert len(typed) == len(DISTILL_ROWS)
    lines = []
    for (file, name), rec in zip(DISTILL_ROWS, typed, strict=True):
        old = rec["metrics"]["cells"]
        runs = [v for k, v in load_results(RESULTS / f"{file}.json").items() if k.split("|")[0] == name]
        cells = [pm([r["test"][t][m] for r in runs]) for t in ("watch", "like") for m in ("auc", "gauc")]
        cells += [f"{runs[0]['params']:,}", f"{np.mean([r['train_samples_per_s'] for r in runs]):,.0f}"]
        cells = [f"**{c}**" if o.startswith("**") else c for c, o in zip(cells, old[1:7], strict=True)]
        lines.append(row([old[0], *cells, old[7], str(len(runs))]))
    return "\n".join(lines)


# mtl-rk-ml100k: the last column is the best epochs, and the bold cells (index into the
# metric cells: 0-2 watch AUC/GAUC/logloss, 3-5 like AUC/GAUC/logloss) are the readings'.
MTL_RK_BOLD = {("single-task like", 3), ("shared bottom", 4), ("MMoE (4 experts 128-64, towers 32)", 4)}


def mtl_rk_ml100k() -> str:
    import yaml

    grid = yaml.safe_load((HERE / "grids" / "mtl-rk-ml100k.yaml").read_text())
    results = load_results(RESULTS / "grid-mtl-rk-ml100k.json")
    lines = []
    for variant in grid["variants"]:
        name = variant["name"]
        runs = [v for k, v in results.items() if k.split("|")[0] == name]
        cells = []
        for task in ("watch", "like"):
            for metric in ("auc", "gauc", "logloss"):
                vals = [r["test"].get(task, {}).get(metric) for r in runs]
                cell = pm(vals) if all(v is not None for v in vals) else "–"
                cells.append(f"**{cell}**" if (name, len(cells)) in MTL_RK_BOLD else cell)
        speed = np.mean([r["train_samples_per_s"] for r in runs])
        lines.append(
            row([name, *cells, f"{runs[0]['params']:,}", f"{speed:,.0f}", "/".join(str(r["best_epoch"]) for r in runs)])
        )
    return "\n".join(lines)


def transcribed(name: str) -> str | None:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return None
    return "\n".join(row(r["metrics"]["cells"]) for r in records(path))


# --- the one-page summary -----------------------------------------------------------------

# One row per protocol: the configuration the study selected (on validation, see the study's
# page), the metric read from its results file, and the peer it is set beside. Peers that are
# other libraries' or papers' figures are quoted from the study page (they have no results file
# here); peers that are our own runs are read from their results file (``peer_metric``: the
# peer's metric path, where it differs from the row's, e.g. a fused list against stage 1 alone).
SUMMARY: list[dict[str, Any]] = [
    {
        "protocol": "C-Frappe",
        "study": "interactions",
        "file": "grid-c-frappe-search",
        "name": "DenseNet dim 128 EMA 0.99",
        "label": "DenseNet + EMA, embeddings 128 (`best-c-frappe.yaml`)",
        "metric": ("test", "click", "auc"),
        "metric_label": "test AUC",
        "peer": "FuxiCTR 2.3.9 DNN 0.9638 (best seed, BARS recipe, same split)",
    },
    {
        "protocol": "RK-ML100K",
        "study": "history",
        "file": "grid-history-rk-ml100k",
        "name": "TransAct",
        "label": "TransAct + MLP (`best-rk-ml100k.yaml`)",
        "metric": ("test", "watch", "auc"),
        "metric_label": "watch AUC",
        "peer_ours": ("grid-history-rk-ml100k", "mean pool", "mean-pool MLP baseline (ours)"),
    },
    {
        "protocol": "MT-Census",
        "study": "multitask",
        "file": "grid-mtl-mt-census",
        "name": "MMoE, embeddings 16, tree bins on both tasks, batch 256, EMA 0.999, DCN-V2 2 layers",
        "label": "MMoE on DCN-V2, tree bins, EMA",
        "metric": ("test", "income", "auc"),
        "metric_label": "income AUC",
        "peer": "FuxiCTR 2.3.9 MMoE 0.9514 (seed 2021); LightGBM 0.9551 (ours, `gbdt-mt-census.json`)",
    },
    {
        "protocol": "T-Adult",
        "study": "numerical-encodings",
        "file": "grid-numerical-t-adult",
        "name": "PLE tree bins (T-LR) 32",
        "label": "PLE tree bins + linear + ReLU (T-LR), 32 bins",
        "metric": ("test", "income", "accuracy"),
        "metric_label": "accuracy",
        "peer": "PLE paper MLP-T-LR 0.868 (15 seeds, their split)",
    },
    {
        "protocol": "R-ML100K",
        "study": "retrieval",
        "file": "retrieval-r-ml100k",
        "name": "sasrec-r-ml100k",
        "label": "SASRec (`retrieval-sasrec-r-ml100k.yaml`)",
        "metric": ("test", "HR@10"),
        "metric_label": "HR@10",
        "peer": "RecBole SASRec 0.160 (same protocol and machine)",
    },
    {
        "protocol": "R-ML1M",
        "study": "retrieval",
        "file": "retrieval-r-ml1m",
        "name": "hstu-large-r-ml1m",
        "label": "HSTU-large (`retrieval-hstu-large-r-ml1m.yaml`)",
        "metric": ("test", "HR@10"),
        "metric_label": "HR@10",
        "peer": "HSTU paper HSTU-large 0.3294 (selected on test, its own tie order); on the usual order, "
        "re-runs (eSASRec authors): HSTU 0.3037, FuXi-α 0.3164",
    },
    {
        "protocol": "R-Beauty",
        "study": "retrieval",
        "file": "retrieval-r-beauty",
        "name": "sasrec-patience-30-r-beauty",
        "label": "SASRec, patience 30",
        "metric": ("test", "HR@10"),
        "metric_label": "HR@10",
        "peer": "published SASRec (BCE, 1 negative) 0.0605; BSARec 0.1008",
    },
    {
        "protocol": "TS-ML1M",
        "study": "two-stage",
        "file": "two-stage-ml-1m-ensemble",
        "name": "none|N200",
        "label": "ensemble of 3 R-ML1M runs (HSTU-large + HSTU + SASRec) top 200 → TransAct + DCN-V2 stage 2, "
        "fused with the stage-1 score (`two_stage.py`, N = 200)",
        "metric": ("blend", "test", "HR@10"),
        "peer_metric": ("test", "HR@10"),
        "metric_label": "HR@10",
        "peer_ours": ("two-stage-ml-1m-ensemble", "stage1|N200", "stage 1 alone (the same ensemble)"),
    },
    {
        "protocol": "TS-ML1M protocol on R-Beauty",
        "study": "two-stage",
        "file": "two-stage-beauty-attr-ensemble-refit",
        "name": "valid-cross|N50",
        "label": "ensemble of 9 R-Beauty runs (4 with S3-Rec item attributes: 3 SASRec + HSTU, full softmax; 5 "
        "without at weight 0.1), each refit with its validation item for its selected epochs (`ranker refit`), "
        "top 50 → feature ranker cross-fitted on the validation queries, fused with the stage-1 score "
        "(`two_stage.py --refit`, N = 50; without the refit 0.0976; published best, not refit: BSARec 0.1008)",
        "metric": ("blend", "test", "HR@10"),
        "peer_metric": ("test", "HR@10"),
        "metric_label": "HR@10",
        "peer_ours": ("two-stage-beauty-attr-ensemble-refit", "stage1|N50", "stage 1 alone (the same refit ensemble)"),
    },
    {
        "protocol": "RK-ML100K generative",
        "study": "generative",
        "file": "compare-generative-rk-ml100k",
        "name": "generative HSTU",
        "label": "generative HSTU (`generative-hstu-rk-ml100k.yaml`)",
        "metric": ("test", "watch", "auc"),
        "metric_label": "watch AUC",
        "peer_ours": ("compare-generative-rk-ml100k", "TransAct + MLP", "TransAct + MLP (ours)"),
    },
    {
        "protocol": "RK-ML100K distillation",
        "study": "multitask",
        "file": "distill-alpha-rk-ml100k",
        "name": "student mean+recent α=0.2 distilled",
        "label": "student mean + recent-5, distilled α = 0.2 (`distill-student-recent-rk-ml100k.yaml`)",
        "metric": ("test", "watch", "auc"),
        "metric_label": "watch AUC",
        "peer_ours": ("distill-alpha-rk-ml100k", "teacher", "teacher TransAct + MMoE (ours; 5× slower to serve)"),
    },
]


def metric_of(m: dict[str, Any], path: tuple[str, ...]) -> float:
    for p in path:
        m = m[p]
    return float(m)  # type: ignore[arg-type]


def summary_figure(file: str, name: str, path: tuple[str, ...]) -> tuple[str, list[dict[str, Any]]]:
    # one record per seed; beside seeded runs, a record without a seed (a bootstrap over the seeds)
    # is not a run
    recs = by_name(RESULTS / f"{file}.json")[name]
    recs = [r for r in recs if r["seed"] is not None] or recs
    vals = [metric_of(r["metrics"], path) for r in recs]
    seeds = [r["seed"] for r in recs]
    text = f"{np.mean(vals):.4f} ± {np.std(vals):.4f}" if len(vals) > 1 else f"{vals[0]:.4f}"
    return (
        f"{text} ({len(vals)} seed{'s' if len(vals) > 1 else ''}{': ' + str(seeds[0]) if len(vals) == 1 else ''})",
        recs,
    )


def summary(link_base: str = "experiments/") -> str:
    lines = []
    for s in SUMMARY:
        figure, recs = summary_figure(s["file"], s["name"], s["metric"])
        if "peer_ours" in s:
            pfile, pname, plabel = s["peer_ours"]
            pfig, _ = summary_figure(pfile, pname, s.get("peer_metric", s["metric"]))
            peer = f"{plabel} {pfig.split(' (')[0]}"
        else:
            peer = s["peer"]
        prov = [r["provenance"] for r in recs]
        dates = sorted({p["date"][:10] for p in prov if p["date"] != UNKNOWN})
        commits = list(dict.fromkeys(p["commit"][:7] for p in prov if p["commit"] != UNKNOWN))
        # The environment prefix is the same everywhere (the method notes say so).
        command = re.sub(r"^(RANKER_\w+=\S+ )+", "", prov[0]["command"])
        command = command if len(command) <= 110 else command[:107] + "…"
        lines.append(
            row(
                [
                    s["protocol"],
                    s["label"],
                    f"{s['metric_label']} {figure}",
                    peer,
                    f"`{command}`" if command != UNKNOWN else UNKNOWN,
                    (f"{dates[0]}" if len(dates) == 1 else f"{dates[0]} – {dates[-1]}") if dates else UNKNOWN,
                    ", ".join(commits) or UNKNOWN,
                    f"[{s['study']}]({link_base}{s['study']}.md)",
                ]
            )
        )
    return "\n".join(lines)


def equivalence() -> str:
    """check_equivalence.py: each shipped config's short run at two commits, numbers compared."""
    lines = []
    for r in records(RESULTS / "equivalence-check.json"):
        m = r["metrics"]
        verdict = "equal" if m["equal"] else f"**differ** ({len(m['differences'])}): {m['differences'][0]}"
        lines.append(
            row(
                [
                    f"`{r['name']}`",
                    f"{m['base']} → {m['head']}",
                    f"{m['epochs']} × ≤ {m['steps']}",
                    str(m["compared"]),
                    verdict,
                ]
            )
        )
    return "\n".join(lines)


def reproduce() -> str:
    """check_reproduce.py: full seed-2021 reruns against the recorded seed-2021 figures."""
    lines = []
    for r in records(RESULTS / "reproduce-check.json"):
        for c in r["metrics"]["compared"]:
            lines.append(
                row(
                    [
                        f"`{r['name']}`",
                        c["metric"],
                        f"{c['recorded']:.4f}",
                        f"{c['got']:.4f}",
                        f"{c['diff']:+.4f}",
                        f"{c['tolerance']:.4f}",
                        "ok" if c["ok"] else "**outside**",
                        r["provenance"]["commit"][:7],
                        r["provenance"]["date"][:10],
                    ]
                )
            )
    return "\n".join(lines)


# --- the service's speed (serve_bench.py, issue 18) ---------------------------------------

SERVE = {"": RESULTS / "serve-latency.json", "-ml1m": RESULTS / "serve-latency-ml1m.json"}
SERVE_STORES = {"sqlite": 0, "redis": 1}
SERVE_STAGES = (
    "history",
    "stage 1",
    "stage 2",
    "stage 2: rows",
    "stage 2: preprocessing",
    "stage 2: forward",
    "stage 2: stage-1 features",
    "stage 2: rest",
    "recommend (whole)",
)


def _serve_records(kind: str, suffix: str = "") -> list[dict[str, Any]]:
    """Records of ``results/serve-latency{suffix}.json`` whose key starts with `kind` ([] before the run)."""
    return [r for r in records(SERVE[suffix]) if r["key"].split("|")[0] == kind]


def _not_measured(columns: int, suffix: str = "") -> str:
    """The one row of a serving table before ``serve_bench.py`` has written its results file."""
    command = "--dataset ml-1m --bundle DIR" if suffix else "--build"
    return row([f"not measured yet (`python benchmarks/serve_bench.py {command}`)", *["–"] * (columns - 1)])


def _machine_load(m: dict[str, Any]) -> str:
    return f"{m['load_before']:.1f} → {m['load_after']:.1f}"


def _requests(m: dict[str, Any]) -> str:
    return f"{m['requests']:,}" + (" (time cap)" if m.get("capped") else "")


def serve_recommend(suffix: str = "") -> str:
    recs = sorted(
        (r["metrics"] for r in _serve_records("recommend", suffix)),
        key=lambda m: (m["workers"], SERVE_STORES.get(m["store"], 9), m["clients"]),
    )
    if not recs:
        return _not_measured(9, suffix)
    return "\n".join(
        row(
            [
                f"{m['workers']} × {m['threads_per_worker']}",
                m["store"],
                str(m["clients"]),
                _requests(m),
                str(m["errors"]),
                f"{m['p50_ms']:.1f}",
                f"{m['p99_ms']:.1f}",
                f"{m['req_per_s']:.1f}",
                _machine_load(m),
            ]
        )
        for m in recs
    )


def serve_stages(suffix: str = "") -> str:
    recs = sorted((r["metrics"] for r in _serve_records("stages", suffix)), key=lambda m: m["threads"])
    if not recs:
        return _not_measured(7, suffix)
    lines = []
    for m in recs:
        for stage in (s for s in SERVE_STAGES if s in m["stages"]):  # stage-1 features: newer runs
            s = m["stages"][stage]
            cells = [str(m["threads"]), stage, f"{s['p50_ms']:.2f}", f"{s['p99_ms']:.2f}", f"{s['mean_ms']:.2f}"]
            lines.append(row([*cells, f"{m['requests']:,}", _machine_load(m)]))
    return "\n".join(lines)


def serve_score(suffix: str = "") -> str:
    recs = sorted(
        (r["metrics"] for r in _serve_records("score", suffix)), key=lambda m: (m["path"] != "in-process", m["threads"])
    )
    if not recs:
        return _not_measured(9, suffix)
    return "\n".join(
        row(
            [
                "in-process (`Recommender.score`)" if m["path"] == "in-process" else "HTTP `/score`, 1 client",
                str(m["threads"]),
                f"{m['candidates']:,}",
                str(m["history"]),
                _requests(m),
                str(m["errors"]),
                f"{m['p50_ms']:.1f}",
                f"{m['p99_ms']:.1f}",
                _machine_load(m),
            ]
        )
        for m in recs
    )


def serve_events(suffix: str = "") -> str:
    recs = sorted(
        (r["metrics"] for r in _serve_records("events", suffix)),
        key=lambda m: (SERVE_STORES.get(m["store"], 9), m["batch"]),
    )
    if not recs:
        return _not_measured(9, suffix)
    return "\n".join(
        row(
            [
                m["store"],
                m["durability"],
                str(m["batch"]),
                _requests(m),
                str(m["errors"]),
                f"{m['events_per_s']:,.0f}",
                f"{m['p50_ms']:.1f}",
                f"{m['p99_ms']:.1f}",
                _machine_load(m),
            ]
        )
        for m in recs
    )


def provenance_row(label: str, prov: list[dict[str, Any]]) -> str:
    """One table row: when (UTC span), at which commits, on which machines, by which commands."""
    dates = sorted({p["date"][:16].replace("T", " ") for p in prov})
    commits = list(dict.fromkeys(p["commit"][:7] + (" (dirty)" if p.get("dirty") else "") for p in prov))
    machines = list(dict.fromkeys(p["machine"] for p in prov))
    commands = list(dict.fromkeys(f"`{p['command']}`" for p in prov))
    span = dates[0] if len(dates) == 1 else f"{dates[0]} – {dates[-1]}"
    return row([label, span + " UTC", ", ".join(commits), "; ".join(machines), "; ".join(commands)])


def serve_provenance(suffix: str = "") -> str:
    """When, where and by which command each part of the serving benchmark was measured."""
    lines = []
    for kind in ("stages", "recommend", "score", "events"):
        prov = [r["provenance"] for r in _serve_records(kind, suffix)]
        if not prov:
            continue
        lines.append(provenance_row(kind, prov))
    return "\n".join(lines) or _not_measured(5, suffix)


SCALE_RSS = RESULTS / "scale-rss.json"


def scale_rss() -> str | None:
    """Peak RSS and samples/s per train-row count, streamed beside in memory (``scale_rss.py``)."""
    if not SCALE_RSS.is_file():
        return None
    recs = sorted(records(SCALE_RSS), key=lambda r: (int(r["key"].split("|")[1]), r["key"]))
    lines = []
    for r in recs:
        m = r["metrics"]
        rows = int(r["key"].split("|")[1])
        cells = [f"{rows:,}", "streamed" if m["mode"] == "stream" else "in memory", f"{m['peak_rss_mb'] / 1024:.2f}"]
        cells += [f"{m['prepare_time_s']:.0f}", f"{m['train_samples_per_s']:,.0f}", f"{m['valid_auc']:.4f}"]
        lines.append(row([*cells, r["provenance"]["date"][:16].replace("T", " "), r["provenance"]["commit"][:7]]))
    return "\n".join(lines)


DDP_SPEED = RESULTS / "ddp-speed.json"


def ddp_speed() -> str | None:
    """Training samples/s per (processes × threads), the same global batch (``ddp_speed.py``)."""
    if not DDP_SPEED.is_file():
        return None
    recs = sorted(records(DDP_SPEED), key=lambda r: (r["metrics"]["procs"], r["metrics"]["threads_per_proc"]))
    lines = []
    for r in recs:
        m, p = r["metrics"], r["provenance"]
        cells = [m["device"], f"{m['procs']} × {m['threads_per_proc']}", f"{m['train_samples_per_s']:,.0f}"]
        cells += [f"{m['valid_auc']:.4f}", f"{m['batch_size']:,}", str(m["max_steps_per_epoch"])]
        lines.append(row([*cells, p["date"][:16].replace("T", " "), p["commit"][:7]]))
    return "\n".join(lines)


TORCHREC_MEMORY = RESULTS / "torchrec-memory.json"
GIB24 = 24 * 1024**3  # this machine's memory


def _torchrec_records() -> list[dict[str, Any]]:
    return sorted(
        records(TORCHREC_MEMORY),
        key=lambda r: (r["metrics"]["dim"], r["metrics"]["rows"], r["metrics"]["mode"], r["metrics"]["procs"]),
    )


def torchrec_memory() -> str | None:
    """Per rank: the table rows it holds, RSS after a step, peak RSS before the checkpoint (build and
    step; ``engine`` only) and over the whole run (``torchrec_memory.py``)."""
    if not TORCHREC_MEMORY.is_file():
        return None
    lines = []
    for r in _torchrec_records():
        m, p = r["metrics"], r["provenance"]
        worst = max(m["ranks"], key=lambda x: x["peak_rss_mb"])
        cells = [m["mode"], str(m["procs"]), f"{m['rows']:,}", str(m["dim"])]
        cells += [f"{worst['table_mb'] + worst['state_mb']:,.0f}", f"{worst['rss_mb'] / 1024:.2f}"]
        train_peak = max((x["train_peak_rss_mb"] for x in m["ranks"] if "train_peak_rss_mb" in x), default=None)
        cells += ["—" if train_peak is None else f"{train_peak / 1024:.2f}"]
        cells += [f"{worst['peak_rss_mb'] / 1024:.2f}", p["date"][:16].replace("T", " "), p["commit"][:7]]
        lines.append(row(cells))
    return "\n".join(lines)


def torchrec_oom() -> str | None:
    """Computed, not measured: the table rows at which the peak RSS reaches 24 GiB (one process per
    24 GiB host; all processes on this 24 GiB machine), from the slope of the measured peak per
    rank between the two largest tables of each (build, processes, dim): the worst process, and
    the processes other than rank 0 (which alone holds whole tables at checkpoints, ``engine``)."""
    if not TORCHREC_MEMORY.is_file():
        return None
    groups: dict[tuple[str, int, int], list[tuple[int, float, float | None]]] = {}
    for r in _torchrec_records():
        m = r["metrics"]
        peak = max(x["peak_rss_mb"] for x in m["ranks"]) * 1024**2
        others = [x["peak_rss_mb"] * 1024**2 for x in m["ranks"] if x["rank"] != 0]
        groups.setdefault((m["mode"], m["procs"], m["dim"]), []).append((m["rows"], peak, max(others, default=None)))
    lines = []
    for (mode, procs, dim), points in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])):
        if len(points) < 2:
            continue
        (r0, p0, o0), (r1, p1, o1) = sorted(points)[-2:]
        slope = (p1 - p0) / (r1 - r0)  # bytes per table row, per rank
        base = p1 - slope * r1  # the runtime (the intercept), per rank
        own_host = (GIB24 - base) / slope  # each process on a 24 GiB host of its own
        this_host = (GIB24 - procs * base) / (procs * slope)  # all processes on this 24 GiB machine
        others = "—"
        if o0 is not None and o1 is not None:
            other_slope = (o1 - o0) / (r1 - r0)
            others = f"{(GIB24 - (o1 - other_slope * r1)) / other_slope / 1e6:,.0f} M"
        cells = [mode, str(procs), str(dim), f"{slope:.1f}", f"{r0:,} → {r1:,}"]
        cells += [f"{own_host / 1e6:,.0f} M", others, f"{this_host / 1e6:,.0f} M"]
        lines.append(row(cells))
    return "\n".join(lines) or None


BAD_INPUT = RESULTS / "bad-input.json"


def bad_input_corpus() -> str | None:
    """Outcomes of the malformed-input corpus per group (``corpus_report.py``)."""
    if not BAD_INPUT.is_file():
        return None
    recs = [r for r in records(BAD_INPUT) if r["key"].startswith("corpus|")]
    kinds = ("error", "warning", "unusable", "traceback", "silent", "other")
    lines = [row(["group", "inputs", *kinds]), row(["---"] * (len(kinds) + 2))]
    total = dict.fromkeys(kinds, 0)
    for r in sorted(recs, key=lambda r: r["name"]):
        m = r["metrics"]
        lines.append(row([r["name"], str(sum(m[k] for k in kinds)), *(str(m[k]) for k in kinds)]))
        for k in kinds:
            total[k] += m[k]
    lines.append(row(["**all**", f"**{sum(total.values())}**", *(f"**{total[k]}**" for k in kinds)]))
    return "\n".join(lines)


def bad_input_hypothesis() -> str | None:
    """Example counts of the property-based tests (``corpus_report.py``)."""
    if not BAD_INPUT.is_file():
        return None
    recs = [r for r in records(BAD_INPUT) if r["key"].startswith("hypothesis|")]
    lines = [row(["property test", "passing examples", "failing", "invalid"]), row(["---"] * 4)]
    for r in recs:
        m = r["metrics"]
        lines.append(row([f"`{r['name']}`", str(m["passing"]), str(m["failing"]), str(m["invalid"])]))
    passing = sum(r["metrics"]["passing"] for r in recs)
    lines.append(row(["**all**", f"**{passing}**", str(sum(r["metrics"]["failing"] for r in recs)), ""]))
    date = max((r["provenance"]["date"][:10] for r in records(BAD_INPUT)), default="?")
    commit = {r["provenance"]["commit"][:7] for r in records(BAD_INPUT)}
    return "\n".join(lines) + f"\n\nRun {date}, commit {', '.join(sorted(commit))}."


# --- the /score serving designs (score_designs.py, issue 18) ----------------------------------

SCORE_DESIGNS = RESULTS / "score-designs.json"


def _design_records() -> tuple[list[str], dict[tuple[str, str], dict[str, Any]]]:
    """Design keys in first-seen order, and ``{(part, key-suffix): record}`` of score-designs.json."""
    order: list[str] = []
    by: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records(SCORE_DESIGNS) if SCORE_DESIGNS.is_file() else []:
        part, design, rest = r["key"].split("|", 2)
        if design not in order:
            order.append(design)
        by[(part, f"{design}|{rest}")] = r
    return order, by


def score_designs() -> str:
    """One row per design: test AUC per task (seed 2021) beside /score p50 / p99 at 1 and 2 threads."""
    order, by = _design_records()
    if not order:
        return row(["not measured yet (`python benchmarks/score_designs.py latency`)", *["–"] * 8])
    lines = []
    for design in order:
        q = next((r for (part, k), r in by.items() if part == "quality" and k.startswith(design + "|")), None)
        lat = {t: by.get(("latency", f"{design}|threads={t}")) for t in (1, 2)}
        name = (q or lat[1] or lat[2] or {"name": design})["name"]
        test = q["metrics"]["test"] if q else {}
        auc = [f"{test[t]['auc']:.4f}" if t in test else "–" for t in ("watch", "like")]
        cells = [f"{r['metrics'][k]:.1f}" if r else "–" for r in (lat[1], lat[2]) for k in ("p50_ms", "p99_ms")]
        two = lat[2]["metrics"]["p50_ms"] if lat[2] else None
        meets = "–" if two is None else ("yes" if two <= 10.0 else "no")
        lines.append(row([name, *auc, f"{q['metrics']['params']:,}" if q else "–", *cells, meets]))
    return "\n".join(lines)


def score_designs_parts() -> str:
    """Where each design's /score time goes (p50 ms): the request's batch, the model, the rest."""
    order, by = _design_records()
    lines = []
    for design in order:
        for path in ("", "|path=full-rows"):
            for t in (1, 2):
                r = by.get(("latency", f"{design}|threads={t}{path}"))
                if r is None:
                    continue
                m = r["metrics"]
                label = r["name"] + (" — before the serving fixes (every row encoded, plain forward)" if path else "")
                parts = [f"{m[k]:.2f}" if k in m else "–" for k in ("encode_p50_ms", "model_p50_ms")]
                cells = [label, str(t), *parts, f"{m['p50_ms']:.2f}", f"{m['requests']:,}", _machine_load(m)]
                lines.append(row(cells))
    return "\n".join(lines) or row(["not measured yet (`python benchmarks/score_designs.py latency`)", *["–"] * 6])


def score_designs_http() -> str:
    """/score over HTTP per design (``score_designs.py latency --http``): p50 / p99 beside in-process."""
    order, by = _design_records()
    lines = []
    for design in order:
        for t in (1, 2):
            r = by.get(("latency", f"{design}|threads={t}|path=http"))
            if r is None:
                continue
            m = r["metrics"]  # the in-process p50 of the same run (not the design table's earlier one)
            local = f"{m['in_process_p50_ms']:.1f}" if "in_process_p50_ms" in m else "–"
            cells = [r["name"], str(t), f"{m['p50_ms']:.1f}", f"{m['p99_ms']:.1f}", local, str(m["errors"])]
            lines.append(row([*cells, _requests(m), _machine_load(m)]))
    return "\n".join(lines) or row(
        ["not measured yet (`python benchmarks/score_designs.py latency --http`)", *["–"] * 7]
    )


def score_designs_provenance() -> str:
    """When, where and by which command the design study's parts were measured."""
    recs = records(SCORE_DESIGNS) if SCORE_DESIGNS.is_file() else []
    lines = []
    for part in ("quality", "latency"):
        prov = [r["provenance"] for r in recs if r["key"].startswith(part + "|")]
        if not prov:
            continue
        lines.append(provenance_row(part, prov))
    return "\n".join(lines) or row(["not measured yet", *["–"] * 4])


# --- the R-ML1M stage-1 lever ledger (issue 19) ---------------------------------------------

# Each stage-1 lever measured on R-ML1M: the run with the lever and the run without it, both
# seed 2021 unless the key says otherwise, as (results file, record key). Validation is what
# selects (NDCG@10, and HR@200 as the recall a stage 2 can rank); test is read once.
LEVERS_R_ML1M: list[dict[str, Any]] = [
    {
        "lever": "full softmax over 3,883 items (HSTU-large; stopped at epoch 42)",
        "run": ("retrieval-r-ml1m-stage1", "hstu-large-full-r-ml1m|2021"),
        "base": ("retrieval-r-ml1m", "hstu-large-r-ml1m|2021"),
        "base_label": "128 sampled negatives (shipped)",
    },
    {
        "lever": "longer training (the same run to its patience: epoch 64)",
        "run": ("retrieval-r-ml1m-stage1", "hstu-large-full-e100-r-ml1m|2021"),
        "base": ("retrieval-r-ml1m-stage1", "hstu-large-full-r-ml1m|2021"),
        "base_label": "stopped at epoch 42",
    },
    {
        "lever": "depth: 8 layers (HSTU, 1 head of 50)",
        "run": ("scaling-r-ml1m", "8 layers, 100% users|2021"),
        "base": ("scaling-r-ml1m", "2 layers, 100% users|2021"),
        "base_label": "2 layers",
    },
    {
        "lever": "width: d_qk = d_v = 50 (HSTU)",
        "run": ("retrieval-r-ml1m", "hstu-r-ml1m|2021"),
        "base": ("retrieval-r-ml1m-ablations", "hstu-d25-r-ml1m|2021"),
        "base_label": "d_qk = d_v = 25",
    },
    {
        "lever": "AdamW β2 = 0.98 (HSTU)",
        "run": ("retrieval-r-ml1m-ablations", "hstu-betas-0.98-r-ml1m|2021"),
        "base": ("retrieval-r-ml1m", "hstu-r-ml1m|2021"),
        "base_label": "β2 = 0.999 (shipped)",
    },
    {
        "lever": "side information: genres and year (SASRec)",
        "run": ("retrieval-r-ml1m-stage1", "sasrec-attr-r-ml1m|2021"),
        "base": ("retrieval-r-ml1m", "sasrec-r-ml1m|2021"),
        "base_label": "ids only (shipped)",
    },
    {
        "lever": "SASRec+ recipe: width 64, dropout 0.1, inner products, full softmax",
        "run": ("retrieval-r-ml1m-stage1", "sasrec-ce-r-ml1m|2021"),
        "base": ("retrieval-r-ml1m", "sasrec-r-ml1m|2021"),
        "base_label": "width 50, cosine / 0.05, 128 sampled (shipped)",
    },
    {
        "lever": "ensemble: + HSTU + SASRec at weight 0.25 (no training)",
        "run": ("ensemble-r-ml1m", "hstu-large+hstu+sasrec"),
        "base": ("ensemble-r-ml1m", "hstu-large+hstu+sasrec|member0"),
        "base_label": "its anchor alone (epoch-64 HSTU-large)",
    },
    {
        "lever": "SASRec+ as a fourth ensemble member (scores in logit units, `--logit-units`)",
        "run": ("ensemble-r-ml1m", "hstu-large+sasrec-ce+hstu+sasrec (logit units)"),
        "base": ("ensemble-r-ml1m", "hstu-large+hstu+sasrec (retrained)"),
        "base_label": "the three-member ensemble",
    },
]


LEVER_COLUMNS = (("valid", "NDCG@10"), ("valid", "HR@200"), ("test", "HR@10"), ("test", "NDCG@10"))


def levers_r_ml1m() -> str:
    """One row per stage-1 lever: validation NDCG@10 and HR@200 with and without it, and test."""
    cache: dict[str, dict[str, Any]] = {}

    def metrics(ref: tuple[str, str]) -> dict[str, Any] | None:
        if ref[0] not in cache:
            cache[ref[0]] = load_results(RESULTS / f"{ref[0]}.json")
        return cache[ref[0]].get(ref[1])

    header = [
        "| lever | without it | valid NDCG@10 | valid HR@200 | test HR@10 | test NDCG@10 | records |",
        "|---|---|---|---|---|---|---|",
    ]
    lines = []
    for lever in LEVERS_R_ML1M:
        run, base = metrics(lever["run"]), metrics(lever["base"])
        if base is None:  # a lever is only read against its run without it
            raise SystemExit(f"levers-r-ml1m: no record {lever['base'][1]!r} in results/{lever['base'][0]}.json")
        refs = [(f, key.replace("|", "\\|")) for f, key in (lever["run"], lever["base"])]  # "|" would split the cell
        source = " vs ".join(f"`{f}`: {key}" for f, key in refs)
        if run is None:
            cells = [lever["lever"], lever["base_label"], "not finished", "–", "–", "–", source]
            lines.append(row(cells))
            continue
        pairs = [(run[split][m], base[split][m]) for split, m in LEVER_COLUMNS]
        cells = [lever["lever"], lever["base_label"], *(f"{a:.4f} ({a - b:+.4f})" for a, b in pairs), source]
        lines.append(row(cells))
    return "\n".join(header + lines)


RENDERERS: dict[str, Callable[[], str | None]] = {
    "equivalence": equivalence,
    "reproduce": reproduce,
    "baseline": baseline,
    "most-popular": most_popular,
    "ablations-r-ml100k": ablations_r_ml100k,
    "ann-r-ml100k": ann_r_ml100k,
    "generative-compare": generative_compare,
    "generative-by-user": generative_by_user,
    "generative-serving": generative_serving,
    "history-row-transact": history_row_transact,
    "mtl-rk-ml100k": mtl_rk_ml100k,
    "distill-rk-ml100k": distill_rk_ml100k,
    "summary": summary,
    "serve-recommend": serve_recommend,
    "serve-stages": serve_stages,
    "serve-score": serve_score,
    "serve-events": serve_events,
    "serve-provenance": serve_provenance,
    "serve-recommend-ml1m": lambda: serve_recommend("-ml1m"),
    "serve-stages-ml1m": lambda: serve_stages("-ml1m"),
    "serve-score-ml1m": lambda: serve_score("-ml1m"),
    "serve-events-ml1m": lambda: serve_events("-ml1m"),
    "serve-provenance-ml1m": lambda: serve_provenance("-ml1m"),
    "score-designs": score_designs,
    "score-designs-parts": score_designs_parts,
    "score-designs-http": score_designs_http,
    "score-designs-provenance": score_designs_provenance,
    "summary-root": lambda: summary("docs/experiments/"),
    "scale-rss": scale_rss,
    "ddp-speed": ddp_speed,
    "torchrec-memory": torchrec_memory,
    "torchrec-oom": torchrec_oom,
    "bad-input-corpus": bad_input_corpus,
    "bad-input-hypothesis": bad_input_hypothesis,
    "levers-r-ml1m": levers_r_ml1m,
}


def render(name: str) -> str | None:
    if name in RENDERERS:
        return RENDERERS[name]()
    if name.startswith("transcribed-"):
        return transcribed(name)
    if name == "finetune":
        path = RESULTS / "finetune-rk-ml100k.json"
        return finetune_rk.table(load_results(path)) if path.is_file() else None
    if name.startswith("two-stage-"):
        path = RESULTS / f"{name}.json"
        return two_stage.table(load_results(path)) if path.is_file() else None
    if name.startswith("ensemble-"):
        path = RESULTS / f"{name}.json"
        return stage1_ensemble.table(load_results(path)) if path.is_file() else None
    if name.startswith(("retrieval-", "scaling-")):
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            return None
        results = load_results(path)
        if name.startswith("scaling-"):
            return scaling_hstu.table(scaling_hstu.rows(results))
        return run_retrieval.table(results)
    grid = HERE / "grids" / f"{name}.yaml"
    results_path = RESULTS / f"grid-{name}.json"
    if not grid.is_file() or not results_path.is_file():
        return None
    return grid_table(grid, load_results(results_path)) or None


def update(path: Path, check: bool) -> tuple[list[str], list[str]]:
    """(tables that differ, tables with no renderer/results) of one document."""
    text = path.read_text()
    changed: list[str] = []
    missing: list[str] = []

    def replace(m: re.Match[str]) -> str:
        body = render(m["name"])
        if body is None:
            missing.append(m["name"])
            return m.group(0)
        if body != m["body"]:
            changed.append(m["name"])
        end = m.group(4) if m.group(4).startswith("\n") else "\n" + m.group(4)
        return m.group(1) + body + end

    new = MARKER.sub(replace, text)
    if not check and new != text:
        path.write_text(new)
    return changed, missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, nargs="*", help="documents (default: all generated docs)")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    bad = False
    for path in args.file or docs():
        changed, missing = update(path, args.check)
        rel = path.resolve().relative_to(ROOT.resolve()) if path.resolve().is_relative_to(ROOT.resolve()) else path
        if changed or missing:
            print(
                f"{rel}: {'differ' if args.check else 'changed'}: {', '.join(changed) or 'none'}"
                + (f"; no renderer or results file: {', '.join(missing)}" if missing else "")
            )
        bad = bad or bool(changed) or bool(missing)
    if not bad:
        print("every generated table matches its results files")
    if args.check:
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
