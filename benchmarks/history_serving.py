"""Serving cost of the history encoders: candidates/s scoring n candidates for ONE user on CPU.

Usage:
    python benchmarks/history_serving.py [--n 100 1000] [--lengths 10 50] [--threads 1] [--repeats 20]

The encoders have RK-ML100K's widths (item embedding 16, action embedding 8, 1,683 items,
ratings 1–5 as actions) and random weights: speed does not depend on the weights. For each
encoder and history length L, a full history of one user is scored against n distinct candidate
items in two ways:

* ``naive``: the batch a feature-based ranker would send, the user's history repeated n times
  and the whole encoder run per row (event lookups and projections included);
* ``split``: the serving path, :meth:`TransActEncoder.encode_history` once per user, then
  :meth:`TransActEncoder.score_candidates` for the n candidates (only what depends on the
  candidate runs per candidate). Mean pool and DIN have no split method: for them only the
  naive figure is given (mean pool's output does not depend on the candidate at all).

Timed: the encoder's forward in ``eval()`` under ``torch.no_grad``; median of `repeats` calls
after 3 warm-ups. Prints a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from timing import median_seconds
from torch import nn

from ranker.nn.din import DINAttention
from ranker.nn.embeddings import CategoricalFields, FeatureEmbeddings
from ranker.nn.history import MeanPoolHistory
from ranker.nn.transact import TransActEncoder

N_ITEMS, D_ITEM, N_ACTIONS, ACTION_DIM = 1683, 16, 6, 8


def user_history(length: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """items, mask, actions (n, length): one user's history repeated for n candidates."""
    g = torch.Generator().manual_seed(length)
    items = torch.randint(3, N_ITEMS, (1, length), generator=g)
    actions = torch.randint(1, N_ACTIONS, (1, length), generator=g)
    mask = torch.ones(1, length, dtype=torch.bool)
    return items.expand(n, -1), mask.expand(n, -1), actions.expand(n, -1)


def encoders(items: FeatureEmbeddings) -> dict[str, nn.Module]:
    return {
        "TransAct (early fusion)": TransActEncoder(items, "item", N_ACTIONS, action_dim=ACTION_DIM),
        "TransAct (no early fusion)": TransActEncoder(
            items, "item", N_ACTIONS, action_dim=ACTION_DIM, early_fusion=False
        ),
        "DIN": DINAttention(items, "item", N_ACTIONS, action_dim=ACTION_DIM),
        "mean pool": MeanPoolHistory(items, "item", N_ACTIONS, ACTION_DIM),
    }


@torch.no_grad()
def measure(enc: nn.Module, items: FeatureEmbeddings, length: int, n: int, repeats: int) -> tuple[float, float | None]:
    """(naive, split) candidates/s for one user with `length` events and `n` candidates."""
    history = user_history(length, n)
    cands = items.lookup("item", torch.randperm(N_ITEMS - 3)[:n] + 3)  # (n, d_item)
    naive = n / median_seconds(lambda: enc(*history, candidate=cands), repeats)
    if not isinstance(enc, TransActEncoder):
        return naive, None
    one = [x[:1] for x in history]

    def serve() -> torch.Tensor:
        return enc.score_candidates(enc.encode_history(*one), cands)

    torch.testing.assert_close(serve(), enc(*history, candidate=cands))
    return naive, n / median_seconds(serve, repeats)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--lengths", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument(
        "--results",
        type=Path,
        default=None,
        help="also write the rows to this results file (layout of results_store.py)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    items = FeatureEmbeddings(CategoricalFields({"item": "item"}, {}, {"item": N_ITEMS}), D_ITEM)
    print(
        f"| encoder | events L | candidates n | naive candidates/s | split candidates/s |  "
        f"({args.threads} thread)\n|---|---|---|---|---|"
    )
    rows: dict[str, dict[str, object]] = {}
    for name, enc in encoders(items).items():
        enc.eval()
        for length in args.lengths:
            for n in args.n:
                naive, split = measure(enc, items, length, n, args.repeats)
                shown = "–" if split is None else f"{split:,.0f}"
                print(f"| {name} | {length} | {n:,} | {naive:,.0f} | {shown} |", flush=True)
                rows[f"{name}|L={length}|n={n}"] = {
                    "encoder": name,
                    "events": length,
                    "candidates": n,
                    "naive_candidates_per_s": naive,
                    "split_candidates_per_s": split,
                }
    if args.results:
        from results_store import save_document  # type: ignore[import-not-found]

        save_document(
            args.results,
            rows,
            protocol="RK-ML100K",
            seed=None,
            notes={"threads": args.threads, "repeats": args.repeats},
        )


if __name__ == "__main__":
    main()
