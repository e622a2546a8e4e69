"""Stage 1 as an ensemble of finished retrieval runs (R-ML1M; issue 19's stage-1 levers).

Usage (from the repository root):
    RANKER_DATA_DIR=../shared/data RANKER_THREADS=1 python benchmarks/stage1_ensemble.py \
        --name hstu-large+hstu+sasrec --runs runs/ts-ml1m-long/hstu-large-full-e100-r-ml1m-2021 \
        runs/reproduce/retrieval-hstu-r-ml1m-2021 runs/reproduce/retrieval-sasrec-r-ml1m-2021

The first ``--anchors`` runs (default 1) have weight 1; every other run gets one shared weight
w from ``--grid``. The ensemble ranks by ``Σ_{anchors} s_k + w · Σ_{others} s_k``
(``ranker.retrieval.ensemble``);
w is picked on validation NDCG@10, test is reported at that w only. With ``--logit-units``
member k's score counts as ``(τ_1 / τ_k) · s_k``: its own logit ``s_k / τ_k`` (τ_k, the softmax
temperature it trained with) in the first run's units, so a member trained with plain inner
products (τ = 1) and one with cosine scores at τ = 0.05 meet on one scale; the recorded weights
are then the effective ones, ``w_k · τ_1 / τ_k``, the ones to pass on. Each member alone is
evaluated the same way (full catalogue, history excluded, the protocol's ranks), so the rows
are comparable. The picked ensemble is what ``two_stage.py --stage1 RUN ... --stage1-weights 1 w
w ...`` uses as its stage 1.

Results: ``benchmarks/results/ensemble-<dataset>.json`` (layout ranker-results/1): key
``<name>`` (the picked ensemble: valid and test metrics, w, the validation NDCG@10 of every w)
and ``<name>|member<k>`` (each run alone); with ``--refit RUN ...`` (the runs' ``ranker refit``s, same
order) also ``<name>|refit`` (the refits at the weights validation picked for the runs, test
only) and ``<name>|refit-member<k>``. Table: ``<!-- table:ensemble-<dataset> -->``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ranker.metrics import metrics_from_ranks, retrieval_ranks
from ranker.models.sequential import SequentialRetriever
from ranker.retrieval.ensemble import RetrieverEnsemble, check_same_data
from ranker.retrieval.evaluation import evaluate_model, exclusion_mask, score_batches
from ranker.retrieval.protocol import LeaveOneOut
from ranker.retrieval.run import check_refit, load_run, run_views

sys.path.insert(0, str(Path(__file__).parent))
from results_store import load_results, save_result  # noqa: E402  # type: ignore[import-not-found]

HERE = Path(__file__).parent
KS = (10, 50, 200)
GRID = (0.1, 0.25, 0.5, 0.75, 1.0)
PROTOCOLS = {"r-ml1m": "R-ML1M", "r-ml100k": "R-ML100K", "r-beauty": "R-Beauty"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--runs", type=Path, nargs="+", required=True, help="retrieval runs on the same events; the first is the anchor"
    )
    p.add_argument("--name", required=True, help="the ensemble's row name")
    p.add_argument("--grid", type=float, nargs="+", default=list(GRID), help="weights w > 0 of the other runs")
    p.add_argument("--anchors", type=int, default=1, help="the first ANCHORS runs have weight 1, the others w")
    p.add_argument(
        "--logit-units",
        action="store_true",
        help="count each run's score in its own logit units (divided by its loss.temperature), scaled to the first run's",
    )
    p.add_argument("--dataset", default="r-ml1m", choices=sorted(PROTOCOLS), help="the results file's protocol")
    p.add_argument(
        "--refit",
        type=Path,
        nargs="+",
        help="the refits of --runs (`ranker refit`, same order): their test figures at the weights validation picked",
    )
    return p.parse_args(argv)


@torch.no_grad()
def ranks(
    runs: list[Path], grid: list[float], anchors: int, logit_units: bool = False
) -> tuple[
    str,
    LeaveOneOut,
    list[SequentialRetriever],
    list[float],
    dict[str, list[np.ndarray]],
    dict[str, dict[float, np.ndarray]],
]:
    """(the anchor's eval.exclude, views, the members, each member's factor on its score
    (:func:`scales`), each member's ranks per split, the ensemble's ranks per split and weight w).

    The first `anchors` runs have weight 1, the others w (times :func:`scales`). Users are scored in batches by every
    member at once (the same batches: the runs share their events), so no users × items matrix
    is ever held whole.
    """
    loaded = [load_run(r) for r in runs]
    cfg, _, serving = loaded[0]
    for run, (_, _, other) in zip(runs[1:], loaded[1:], strict=True):
        check_same_data(serving, other, runs[0], run)  # the library ensemble's own check
    data = run_views(cfg, serving)
    scale = scales([c for c, _, _ in loaded], logit_units)
    alone: dict[str, list[np.ndarray]] = {}
    fused: dict[str, dict[float, np.ndarray]] = {}
    for split in ("valid", "test"):
        inputs, targets = data.split(split)
        alone[split] = [np.zeros(len(targets), dtype=np.int64) for _ in runs]
        fused[split] = {w: np.zeros(len(targets), dtype=np.int64) for w in grid}
        streams = [score_batches(m, data, split, cfg.train.eval_batch_size) for _, m, _ in loaded]
        for batches in zip(*streams, strict=True):
            users, model_input, _ = batches[0]
            mask = exclusion_mask(inputs, users, model_input, data.num_items, cfg.eval.exclude)
            target = torch.from_numpy(targets[users])
            for k, (u, _, s) in enumerate(batches):
                assert np.array_equal(u, users)  # the same length order for every member
                alone[split][k][users] = retrieval_ranks(s, target, mask)
            anchor = sum(c * s for c, (_, _, s) in zip(scale[:anchors], batches[:anchors], strict=True))
            rest = sum(c * s for c, (_, _, s) in zip(scale[anchors:], batches[anchors:], strict=True))
            for w in grid:
                fused[split][w][users] = retrieval_ranks(anchor + w * rest, target, mask)  # type: ignore[operator]
    return cfg.eval.exclude, data, [m for _, m, _ in loaded], scale, alone, fused


def scales(configs: list[Any], logit_units: bool) -> list[float]:
    """Each member's factor on its score: ``τ_1 / τ_k`` in logit units (τ, its ``loss.temperature``), else 1.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> cfg = lambda t: NS(loss=NS(temperature=t))
        >>> scales([cfg(0.05), cfg(1.0), cfg(0.05)], True), scales([cfg(0.05), cfg(1.0)], False)
        ([1.0, 0.05, 1.0], [1.0, 1.0])
    """
    if not logit_units:
        return [1.0] * len(configs)
    first = float(configs[0].loss.temperature)
    return [first / float(c.loss.temperature) for c in configs]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if len(args.runs) < 2 or any(w <= 0 for w in args.grid) or not 1 <= args.anchors < len(args.runs):
        raise SystemExit("--runs: at least two runs; --grid: weights > 0; --anchors: 1 .. len(--runs) - 1")
    if args.refit and len(args.refit) != len(args.runs):
        raise SystemExit("--refit: one refit run per --runs run, in the same order")
    exclude, data, members, scale, alone, fused = ranks(args.runs, args.grid, args.anchors, args.logit_units)
    path = HERE / "results" / f"ensemble-{args.dataset}.json"
    common: dict[str, Any] = {"protocol": PROTOCOLS.get(args.dataset, args.dataset), "seed": None}
    for k, run in enumerate(args.runs):
        rec = {"run": str(run), **{s: metrics_from_ranks(alone[s][k], KS) for s in ("valid", "test")}}
        save_result(path, f"{args.name}|member{k}", rec, name=f"{args.name}|member{k}", config=str(run), **common)
        print(f"member {k} {run}: valid NDCG@10 {rec['valid']['NDCG@10']:.4f}, test HR@10 {rec['test']['HR@10']:.4f}")
    valid = {w: metrics_from_ranks(fused["valid"][w], KS) for w in args.grid}
    best = max(args.grid, key=lambda w: valid[w]["NDCG@10"])
    rec = {
        "runs": [str(r) for r in args.runs],
        "weights": [c * (1.0 if k < args.anchors else best) for k, c in enumerate(scale)],
        "logit_units": args.logit_units,
        "valid_ndcg10_by_weight": {str(w): valid[w]["NDCG@10"] for w in args.grid},
        "valid": valid[best],
        "test": metrics_from_ranks(fused["test"][best], KS),
    }
    # the same figure through the library's ensemble (what `ranker candidates` and two_stage.py load)
    again = evaluate_model(RetrieverEnsemble(members, rec["weights"]), data, "test", ks=KS, exclude=exclude)
    rec["test_via_ensemble"] = again  # equal up to float-noise ties (a user or two)
    if any(abs(again[k] - rec["test"][k]) > 2 / len(data.test_target) for k in rec["test"]):
        raise SystemExit(f"RetrieverEnsemble disagrees with the fused scores: {again} vs {rec['test']}")
    save_result(path, args.name, rec, name=args.name, config=" + ".join(map(str, args.runs)), **common)
    print(
        f"{args.name}: w = {best} (valid NDCG@10 {valid[best]['NDCG@10']:.4f}), test HR@10 {rec['test']['HR@10']:.4f}"
    )
    if args.refit:
        refit_records(args, path, rec["weights"], exclude, common)
    print(table(load_results(path)))


@torch.no_grad()
def refit_records(
    args: argparse.Namespace, path: Path, weights: list[float], exclude: str, common: dict[str, Any]
) -> None:
    """``<name>|refit`` (the refit runs at the weights validation picked for --runs: test only, a
    refit trained on the validation items) and ``<name>|refit-member<k>`` (each refit alone)."""
    loaded = [load_run(r) for r in args.refit]
    for run, refit, (_, _, serving) in zip(args.runs, args.refit, loaded, strict=True):
        check_refit(run, refit)
        check_same_data(loaded[0][2], serving, args.refit[0], refit)
    data = run_views(loaded[0][0], loaded[0][2])
    for k, (refit, (_, model, _)) in enumerate(zip(args.refit, loaded, strict=True)):
        test = evaluate_model(model, data, "test", ks=KS, exclude=exclude)
        key = f"{args.name}|refit-member{k}"
        save_result(path, key, {"run": str(refit), "test": test}, name=key, config=str(refit), **common)
        print(f"refit member {k} {refit}: test HR@10 {test['HR@10']:.4f}")
    ensemble = RetrieverEnsemble([m for _, m, _ in loaded], weights)
    rec = {
        "refit": [str(r) for r in args.refit],
        "weights": weights,
        "test": evaluate_model(ensemble, data, "test", ks=KS, exclude=exclude),
    }
    save_result(
        path, f"{args.name}|refit", rec, name=f"{args.name}|refit", config=" + ".join(map(str, args.refit)), **common
    )
    print(f"{args.name}, refit: test HR@10 {rec['test']['HR@10']:.4f}, NDCG@10 {rec['test']['NDCG@10']:.4f}")


def table(results: dict[str, Any]) -> str:
    """One row per ensemble (its members first), valid NDCG@10 and test metrics."""
    lines = [
        "| stage 1 | weights (picked on valid) | valid NDCG@10 | valid HR@200 | test HR@10 | test NDCG@10 | test HR@50 | test HR@200 | MRR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in results.items():
        if "|" in name:  # a member, or a refit: listed under its ensemble
            continue
        for tag, label in (("member", "member {} alone"), ("refit-member", "refit of member {} alone")):
            members = sorted(
                (k for k in results if k.startswith(f"{name}|{tag}")), key=lambda k: int(k.rsplit("member", 1)[1])
            )
            for k in members:
                what = label.format(k.rsplit("member", 1)[1])
                lines.append(_row(f"{name}: {what} (`{results[k]['run']}`)", "–", results[k]))
        weights = ", ".join(f"{w:g}" for w in m["weights"])
        lines.append(_row(f"**{name}**", weights, m))
        if f"{name}|refit" in results:
            lines.append(_row(f"**{name}, refit** (test only)", weights, results[f"{name}|refit"]))
    return "\n".join(lines)


def _row(label: str, weights: str, m: dict[str, Any]) -> str:
    v, t = m.get("valid"), m["test"]  # a refit has no held-out validation figures
    cells = [label, weights, *(("–", "–") if v is None else (f"{v['NDCG@10']:.4f}", f"{v['HR@200']:.4f}"))]
    cells += [f"{t[k]:.4f}" for k in ("HR@10", "NDCG@10", "HR@50", "HR@200", "MRR")]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    main()
