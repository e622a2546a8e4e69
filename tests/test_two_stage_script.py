"""benchmarks/two_stage.py, without training: the training-prefix candidates are scored once per
stage 1 and read back by later commands (another stage 1, or an unsealed run, gets its own
lists), and an ablation's seed-averaged lists are paired with the ``none`` ranker's."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import two_stage  # noqa: E402

from ranker.retrieval import candidates as rc  # noqa: E402


def _fake_candidates(user: np.ndarray, position: np.ndarray, n: int) -> rc.Candidates:
    q = len(user)
    return rc.Candidates(
        user=user.astype(np.int64),
        position=position.astype(np.int64),
        target=np.arange(1, q + 1, dtype=np.int64),
        target_score=np.linspace(0, 1, q, dtype=np.float32),
        target_rank=np.arange(1, q + 1, dtype=np.int64),
        items=np.tile(np.arange(1, n + 1, dtype=np.int64), (q, 1)),
        scores=np.zeros((q, n), dtype=np.float32),
    )


def test_prefix_candidates_are_scored_once_per_stage1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    digests = {"runA": "a" * 64, "runB": "b" * 64, "unsealed": None}

    def score(model: Any, seqs: Any, user: np.ndarray, position: np.ndarray, n: int, **_: Any) -> rc.Candidates:
        calls.append(model)
        return _fake_candidates(user, position, n)

    monkeypatch.setattr(two_stage.rc, "prefix_candidates", score)
    monkeypatch.setattr(
        two_stage, "verify_run", lambda run: {"digest": digests[str(run)]} if digests[str(run)] else None
    )
    data = SimpleNamespace(train=None, max_len=20)
    user, pos = np.array([0, 0, 1]), np.array([1, 2, 1])

    def get(runs: list[str], weights: list[float] | None = None, n: int = 4) -> rc.Candidates:
        return two_stage.cached_prefix_candidates(
            tmp_path, [Path(r) for r in runs], weights, runs[0], data, user, pos, n
        )

    first = get(["runA"])
    again = get(["runA"])
    assert calls == ["runA"]  # the second command read the file
    assert np.array_equal(first.items, again.items) and np.array_equal(first.target_score, again.target_score)
    get(["runA", "runB"], [1.0, 0.25])  # an ensemble is another stage 1
    get(["runA", "runB"], [1.0, 0.5])  # and so are other weights
    get(["runA"], n=6)  # and a longer list
    assert calls == ["runA", "runA", "runA", "runA"]
    get(["unsealed"])
    get(["unsealed"])  # never cached: nothing proves it is the same run
    assert calls[-2:] == ["unsealed", "unsealed"]
    assert len(list(tmp_path.glob("prefix-candidates-*.npz"))) == 4


def test_seed_average_pairs_an_ablation_with_the_none_lists_of_the_same_seeds(tmp_path: Path) -> None:
    users = 40
    one = np.full(users, 20)  # stage 1: every target at rank 20
    none = {2021: np.full(users, 5), 2022: np.full(users, 5)}  # the full ranker: rank 5
    ablated = {2021: np.full(users, 5), 2022: np.where(np.arange(users) < 20, 5, 30)}  # half the users lose it
    for name, ranks in (("none", none), ("no-content", ablated)):
        for seed, r in ranks.items():
            folder = tmp_path / "N50" / f"{name}-{seed}"
            folder.mkdir(parents=True)
            np.savez(folder / "final_ranks.npz", test_one=one, test_two=r)
    for seed in (2021, 2022):  # a generative ranker: weak alone, at rank 1 for everyone once fused
        folder = tmp_path / "N50" / f"generative-{seed}"
        folder.mkdir(parents=True)
        np.savez(folder / "final_ranks.npz", test_one=one, test_two=np.full(users, 40), test_blend=np.ones(users))
    args = SimpleNamespace(out=tmp_path, refit=[], resamples=200)
    rec = two_stage.seed_average(args, 50, "no-content", [2021, 2022])  # type: ignore[arg-type]
    assert rec is not None
    # HR@10 per user, averaged over the seeds: 1 for the first half, 0.5 for the second; none: 1
    assert rec["vs_none_test_bootstrap"]["HR@10"]["diff"] == pytest.approx(-0.25)
    assert rec["test_bootstrap"]["HR@10"]["diff"] == pytest.approx(0.75)  # against stage 1's 0
    assert rec["vs_none_test_bootstrap"]["HR@10"]["high"] < 0
    assert "vs_none_test_bootstrap" not in two_stage.seed_average(args, 50, "none", [2021, 2022])  # type: ignore[arg-type, operator]
    assert two_stage.seed_average(args, 50, "no-content", [2021, 2023]) is None  # a seed has not run
    gen = two_stage.seed_average(args, 50, "generative", [2021, 2022])  # type: ignore[arg-type]
    assert gen is not None and gen["vs_none_test_bootstrap"]["HR@10"]["diff"] == pytest.approx(-1.0)
    assert gen["blend_vs_none_test_bootstrap"]["NDCG@10"]["diff"] == pytest.approx(1 - 1 / np.log2(6))
    assert "blend_vs_none_test_bootstrap" not in rec  # no fused lists there
