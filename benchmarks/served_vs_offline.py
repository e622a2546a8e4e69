"""Does the service give the offline two-stage list? TS-ML1M's test queries through ``/recommend``'s code.

Usage (from the repository root):
    RANKER_DATA_DIR=../shared/data python benchmarks/served_vs_offline.py \
        --bundle /tmp/sb-ml1m/bundle --run runs/ts-ml1m/two-stage/N200/none-2021 [--users 6040]

For each R-ML1M user (all of them by default), ``Recommender.recommend`` (in-process, no store)
is asked for the top 200 of 200 candidates with the user's whole sequence but the last item as
the request's history; the last item is the test target. The served list's HR@10 / NDCG@10 are
set beside the offline figures of the same stage-2 run (``final_ranks.npz``, written by
``two_stage.py``), for the two-stage order and for the stage-1 order of the same candidates
(sorted by the answer's ``retrieval_score``). Equal figures say that serving feeds the ranker
what it was trained and evaluated on: the stage-1 score, rank and history length computed per
request, the history, the exclusion of every item seen. A bundle built with ``--stage1-weight w``
serves ``logit(p) + w · s1``: its list is set beside the run's fused list (``test_blend``, whose
weight validation picked; w must be that weight). Results:
``benchmarks/results/served-vs-offline.json`` (key ``ml-1m|N200``, or ``--key``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results_store import save_result  # noqa: E402  # type: ignore[import-not-found]

from ranker.retrieval.data import from_recipe  # noqa: E402
from ranker.serving.bundle import load_bundle  # noqa: E402
from ranker.serving.recommender import Query, Recommender  # noqa: E402
from ranker.serving.store import Event  # noqa: E402

RESULTS = HERE / "results" / "served-vs-offline.json"
N = 200


def list_metrics(ranks: np.ndarray) -> dict[str, float]:
    """HR@10 and NDCG@10 of 1-based target ranks (N + 1: not in the list)."""
    hit = ranks <= 10
    return {"HR@10": float(hit.mean()), "NDCG@10": float(np.where(hit, 1 / np.log2(ranks + 1), 0.0).mean())}


def same_rank(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per user: the same rank in both lists, or a miss (outside the N) in both."""
    return (a == b) | ((a > N) & (b > N))


def rank_of(target: str, items: list[str]) -> int:
    return items.index(target) + 1 if target in items else N + 1


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True, help="HSTU-large + the TS-ML1M stage-2 run, bundled")
    p.add_argument("--run", type=Path, required=True, help="the stage-2 run (its final_ranks.npz)")
    p.add_argument("--users", type=int, default=6040, help="the first N users in a seeded random order")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument(
        "--key", default=f"ml-1m|N{N}", help="the record's key (e.g. ml-1m|N200|ensemble for another stage 1)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rec = Recommender(load_bundle(args.bundle))
    events = from_recipe("r-ml1m")
    seqs, users, items = events.sequences, events.users.to_pylist(), events.items.to_pylist()
    order = np.random.default_rng(0).permutation(len(users))[: args.users]
    offline = dict(np.load(args.run / "final_ranks.npz"))
    fused = rec.bundle.stage1_weight is not None
    if fused and "test_blend" not in offline:
        raise SystemExit(
            f"--bundle serves a fused order, but {args.run}/final_ranks.npz has no fused list (test_blend)"
        )
    offline_two = offline["test_blend" if fused else "test_two"]
    two, one, seconds = [], [], []
    for u in order:
        seq = seqs.items[seqs.offsets[u] : seqs.offsets[u + 1]]
        user = str(users[u])
        history = [Event(user, str(items[i - 1]), None, float(t)) for t, i in enumerate(seq[:-1])]
        target = str(items[seq[-1] - 1])
        start = time.perf_counter()
        out = rec.recommend(Query(user=user, history=history, now=float(len(seq) - 1)), k=N, n_candidates=N, exclude=[])
        seconds.append(time.perf_counter() - start)
        two.append(rank_of(target, [r["item"] for r in out["items"]]))
        by_stage1 = sorted(out["items"], key=lambda r: -r["retrieval_score"])
        one.append(rank_of(target, [r["item"] for r in by_stage1]))
    metrics = {
        "users": len(order),
        "served_two_stages": list_metrics(np.array(two)),
        "served_stage1": list_metrics(np.array(one)),
        "offline_two_stages": list_metrics(offline_two[order]),
        "offline_stage1": list_metrics(offline["test_one"][order]),
        "same_rank_share": float(np.mean(same_rank(np.array(two), offline_two[order]))),
        "stage1_weight": rec.bundle.stage1_weight,
        "recommend_p50_ms": float(np.percentile(seconds, 50) * 1000),
        "threads": args.threads,
    }
    save_result(
        args.results,
        args.key,
        metrics,
        name="served-vs-offline",
        seed=None,
        protocol="TS-ML1M",
        config=f"{args.bundle} ({args.run})",
    )
    for key, value in metrics.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
