"""Stage 1 as an ensemble of finished retrieval runs (R-ML1M; issue 19's stage-1 levers).

Usage (from the repository root):
    RANKER_DATA_DIR=../shared/data RANKER_THREADS=1 python benchmarks/stage1_ensemble.py \
        --name hstu-large+hstu+sasrec --runs runs/ts-ml1m-long/hstu-large-full-e100-r-ml1m-2021 \
        runs/reproduce/retrieval-hstu-r-ml1m-2021 runs/reproduce/retrieval-sasrec-r-ml1m-2021

The first run is the anchor (weight 1); every other run gets one shared weight w from
``--grid``. The ensemble ranks by ``s_1 + w · Σ_{k>1} s_k`` (``ranker.retrieval.ensemble``);
w is picked on validation NDCG@10, test is reported at that w only. Each member alone is
evaluated the same way (full catalogue, history excluded, the protocol's ranks), so the rows
are comparable. The picked ensemble is what ``two_stage.py --stage1 RUN ... --stage1-weights 1 w
w ...`` uses as its stage 1.

Results: ``benchmarks/results/ensemble-<dataset>.json`` (layout ranker-results/1): key
``<name>`` (the picked ensemble: valid and test metrics, w, the validation NDCG@10 of every w)
and ``<name>|member<k>`` (each run alone). Table: ``<!-- table:ensemble-<dataset> -->``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ranker.metrics import metrics_from_ranks, retrieval_ranks
from ranker.retrieval.ensemble import load_ensemble
from ranker.retrieval.evaluation import evaluate_model, exclusion_mask, score_batches
from ranker.retrieval.protocol import LeaveOneOut
from ranker.retrieval.run import load_run, run_views

sys.path.insert(0, str(Path(__file__).parent))
from results_store import load_results, save_result  # noqa: E402  # type: ignore[import-not-found]

HERE = Path(__file__).parent
KS = (10, 50, 200)
GRID = (0.1, 0.25, 0.5, 0.75, 1.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--runs", type=Path, nargs="+", required=True, help="retrieval runs on the same events; the first is the anchor"
    )
    p.add_argument("--name", required=True, help="the ensemble's row name")
    p.add_argument("--grid", type=float, nargs="+", default=list(GRID), help="weights w > 0 of the other runs")
    p.add_argument("--dataset", default="r-ml1m", help="the results file's protocol name")
    return p.parse_args(argv)


@torch.no_grad()
def member_scores(run: Path) -> tuple[LeaveOneOut, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(views, raw scores (U, I + 1) per split, exclusion masks per split) of one run, users in row order."""
    cfg, model, serving = load_run(run)
    data = run_views(cfg, serving)
    scores, masks = {}, {}
    for split in ("valid", "test"):
        inputs, targets = data.split(split)
        out = torch.zeros(len(targets), data.num_items + 1)
        mask = torch.zeros(len(targets), data.num_items + 1, dtype=torch.bool)
        for users, model_input, s in score_batches(model, data, split, cfg.train.eval_batch_size):
            out[torch.from_numpy(users)] = s
            mask[torch.from_numpy(users)] = exclusion_mask(inputs, users, model_input, data.num_items, cfg.eval.exclude)
        scores[split], masks[split] = out, mask
    return data, scores, masks


def metrics(scores: torch.Tensor, mask: torch.Tensor, targets: np.ndarray) -> dict[str, float]:
    return metrics_from_ranks(retrieval_ranks(scores, torch.from_numpy(targets), mask), KS)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if len(args.runs) < 2 or any(w <= 0 for w in args.grid):
        raise SystemExit("--runs: at least two runs; --grid: weights > 0")
    loaded = [member_scores(r) for r in args.runs]
    data, _, masks = loaded[0]
    for run, (other, _, _) in zip(args.runs[1:], loaded[1:], strict=True):
        if not (
            np.array_equal(other.valid_target, data.valid_target)
            and np.array_equal(other.test_target, data.test_target)
        ):
            raise SystemExit(f"{run}: not trained on the same events as {args.runs[0]}")
    targets = {s: data.split(s)[1] for s in ("valid", "test")}
    path = HERE / "results" / f"ensemble-{args.dataset}.json"
    common: dict[str, Any] = {"protocol": "R-ML1M" if args.dataset == "r-ml1m" else args.dataset.upper(), "seed": None}
    for k, (run, (_, scores, _)) in enumerate(zip(args.runs, loaded, strict=True)):
        rec = {"run": str(run), **{s: metrics(scores[s], masks[s], targets[s]) for s in ("valid", "test")}}
        save_result(path, f"{args.name}|member{k}", rec, name=f"{args.name}|member{k}", config=str(run), **common)
        print(f"member {k} {run}: valid NDCG@10 {rec['valid']['NDCG@10']:.4f}, test HR@10 {rec['test']['HR@10']:.4f}")

    def fused(split: str, w: float) -> torch.Tensor:
        return loaded[0][1][split] + w * sum(s[split] for _, s, _ in loaded[1:])  # type: ignore[return-value]

    valid = {w: metrics(fused("valid", w), masks["valid"], targets["valid"]) for w in args.grid}
    best = max(args.grid, key=lambda w: valid[w]["NDCG@10"])
    rec = {
        "runs": [str(r) for r in args.runs],
        "weights": [1.0] + [best] * (len(args.runs) - 1),
        "valid_ndcg10_by_weight": {str(w): valid[w]["NDCG@10"] for w in args.grid},
        "valid": valid[best],
        "test": metrics(fused("test", best), masks["test"], targets["test"]),
    }
    # the same figure through the library's ensemble (what `ranker candidates` and two_stage.py load)
    cfg, model, serving = load_ensemble(args.runs, rec["weights"])
    again = evaluate_model(model, run_views(cfg, serving), "test", ks=KS, exclude=cfg.eval.exclude)
    rec["test_via_ensemble"] = again  # equal up to float-noise ties (a user or two)
    if any(abs(again[k] - rec["test"][k]) > 2 / len(targets["test"]) for k in rec["test"]):
        raise SystemExit(f"RetrieverEnsemble disagrees with the fused scores: {again} vs {rec['test']}")
    save_result(path, args.name, rec, name=args.name, config=" + ".join(map(str, args.runs)), **common)
    print(
        f"{args.name}: w = {best} (valid NDCG@10 {valid[best]['NDCG@10']:.4f}), test HR@10 {rec['test']['HR@10']:.4f}"
    )
    print(table(load_results(path)))


def table(results: dict[str, Any]) -> str:
    """One row per ensemble (its members first), valid NDCG@10 and test metrics."""
    lines = [
        "| stage 1 | weights (picked on valid) | valid NDCG@10 | valid HR@200 | test HR@10 | test NDCG@10 | test HR@50 | test HR@200 | MRR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in results.items():
        if "|member" in name:
            continue
        members = sorted(
            (k for k in results if k.startswith(name + "|member")), key=lambda k: int(k.rsplit("member", 1)[1])
        )
        for k in members:
            lines.append(
                _row(f"{name}: member {k.rsplit('member', 1)[1]} alone (`{results[k]['run']}`)", "–", results[k])
            )
        weights = ", ".join(f"{w:g}" for w in m["weights"])
        lines.append(_row(f"**{name}**", weights, m))
    return "\n".join(lines)


def _row(label: str, weights: str, m: dict[str, Any]) -> str:
    v, t = m["valid"], m["test"]
    cells = [label, weights, f"{v['NDCG@10']:.4f}", f"{v['HR@200']:.4f}"]
    cells += [f"{t[k]:.4f}" for k in ("HR@10", "NDCG@10", "HR@50", "HR@200", "MRR")]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    main()
