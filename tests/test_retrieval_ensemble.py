"""Several retrieval runs as one stage 1: the ensemble ranks by Σ w_k · score_k everywhere a
retriever is used (evaluation, held-out and prefix candidates, `ranker candidates`)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from test_retrieval_cli import TINY

from ranker.cli import main
from ranker.config.retrieval import HSTUModel, SASRecModel
from ranker.metrics import metrics_from_ranks, retrieval_ranks
from ranker.models import HSTU, SASRec
from ranker.retrieval.candidates import heldout_candidates, prefix_candidates, prefix_queries
from ranker.retrieval.ensemble import RetrieverEnsemble, load_ensemble
from ranker.retrieval.evaluation import evaluate_model
from ranker.retrieval.protocol import Sequences, history_mask, leave_one_out_views

ITEMS = 25


def _data(max_len: int = 6):
    rng = np.random.default_rng(3)
    lists = [list(rng.choice(np.arange(1, ITEMS + 1), size=int(rng.integers(4, 12)), replace=False)) for _ in range(15)]
    return leave_one_out_views(Sequences.from_lists(lists), ITEMS, max_len=max_len)


def _members(max_len: int = 6) -> tuple[HSTU, SASRec]:
    torch.manual_seed(0)
    a = HSTU(
        HSTUModel(dim=8, num_layers=1, linear_dim=4, attention_dim=4, dropout=0.0, time_bias=False),
        num_items=ITEMS,
        max_len=max_len,
    )
    b = SASRec(SASRecModel(dim=6, num_layers=1, dropout=0.0), num_items=ITEMS, max_len=max_len)
    return a.eval(), b.eval()


def _weighted_scores(members: tuple[HSTU, SASRec], weights: tuple[float, float], items: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return sum(w * (m.user_vectors(items) @ m.item_vectors().T) for w, m in zip(weights, members, strict=True))  # type: ignore[return-value]


def test_ensemble_scores_are_the_weighted_sum_of_the_members() -> None:
    members = _members()
    both = RetrieverEnsemble(members, [1.0, 0.3])
    items = torch.tensor([[0, 0, 3, 4, 5, 9], [1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        got = both.user_vectors(items) @ both.item_vectors().T
        states = both.encode(items)
    torch.testing.assert_close(got, _weighted_scores(members, (1.0, 0.3), items), atol=1e-6, rtol=1e-5)
    assert states.shape == (2, 6, 8 + 6) and both.dim == 14
    # every position's state is each member's, scaled by its weight
    torch.testing.assert_close(states[..., 8:], 0.3 * members[1].encode(items), atol=1e-6, rtol=1e-5)


def test_heldout_candidates_and_evaluation_rank_by_the_weighted_sum() -> None:
    data = _data()
    members = _members()
    both = RetrieverEnsemble(members, [1.0, 2.0])
    inputs, targets = data.split("test")
    users = np.arange(len(targets))
    scores = _weighted_scores(members, (1.0, 2.0), inputs.padded(users, data.max_len))
    exclude = torch.from_numpy(history_mask(inputs, users, ITEMS))
    ranks = retrieval_ranks(scores, torch.from_numpy(targets), exclude)  # brute force, one matrix
    expected = metrics_from_ranks(ranks, (1, 5, 10))
    assert evaluate_model(both, data, "test", ks=(1, 5, 10), batch_users=4) == pytest.approx(expected)
    c = heldout_candidates(both, data, "test", 5, batch_users=3)
    assert np.array_equal(c.target_rank, ranks) and c.recall() == pytest.approx(expected["HR@5"])
    top = scores.masked_fill(exclude, float("-inf")).topk(5, dim=1).indices.numpy()
    assert np.array_equal(c.items, top)


def test_prefix_candidates_of_the_ensemble_at_the_validation_position() -> None:
    data = _data(max_len=20)  # every prefix fits one window
    both = RetrieverEnsemble(_members(20), [0.5, 1.0])
    valid = heldout_candidates(both, data, "valid", 6)
    lengths = data.test_input.lengths()
    c = prefix_candidates(both, data.test_input, np.arange(len(lengths)), lengths - 1, 6, max_len=20)
    assert np.array_equal(c.items, valid.items) and np.array_equal(c.target_rank, valid.target_rank)
    user, pos = prefix_queries(data.train.lengths(), per_user=2)
    assert len(prefix_candidates(both, data.train, user, pos, 4, max_len=20)) == len(user)


def test_members_must_fit_together() -> None:
    a, _ = _members(6)
    other = SASRec(SASRecModel(dim=6, num_layers=1), num_items=ITEMS + 1, max_len=6)
    with pytest.raises(ValueError, match="differ in"):
        RetrieverEnsemble([a, other], [1.0, 1.0])
    with pytest.raises(ValueError, match="> 0"):
        RetrieverEnsemble([a, a], [1.0, 0.0])
    with pytest.raises(ValueError, match="≥ 2 members"):
        RetrieverEnsemble([a], [1.0])


# ---------------------------------------------------------------------- runs and the CLI


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Two tiny runs on the same events (HSTU, SASRec) and one on other events (max_len 10)."""
    tmp = tmp_path_factory.mktemp("ensemble")
    tiny = {**TINY, "train": {**TINY["train"], "max_steps_per_epoch": 2}}
    variants = {
        "hstu": tiny,
        # another temperature, so scores in logit units differ from raw ones
        "sasrec": {
            **tiny,
            "model": {"kind": "sasrec", "dim": 6, "num_layers": 1},
            "loss": {**tiny["loss"], "temperature": 1.0},
        },
        "short": {**tiny, "data": {"dataset": "r-ml100k", "max_len": 10}},
    }
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANKER_CACHE_DIR", str(tmp / "cache"))
        for name, cfg in variants.items():
            path = tmp / f"{name}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            out[name] = tmp / name
            with contextlib.redirect_stdout(io.StringIO()):
                assert main(["train", str(path), "--out", str(out[name])]) == 0
        yield out


def test_candidates_of_two_runs_are_the_ensembles(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ranker.retrieval.run import run_views

    out = tmp_path / "c.parquet"
    args = ["candidates", str(runs["hstu"]), str(runs["sasrec"]), "--weights", "1", "0.5", "--split", "test"]
    assert main([*args, "--n", "30", "--out", str(out)]) == 0
    cfg, model, serving = load_ensemble([runs["hstu"], runs["sasrec"]], [1.0, 0.5])
    data = run_views(cfg, serving)
    hr = evaluate_model(model, data, "test", ks=(30,))["HR@30"]
    assert f"recall@30 {hr:.4f}" in capsys.readouterr().out
    table = pq.read_table(out)
    assert table.num_rows == 943 * 30 and min(table.column("item").to_pylist()) >= 1  # raw MovieLens ids
    single = evaluate_model(load_ensemble([runs["hstu"], runs["hstu"]], [1.0, 1.0])[1], data, "test", ks=(30,))
    assert single["HR@30"] == pytest.approx(_run_hr30(runs["hstu"]))  # a run twice ranks as the run


def _run_hr30(run: Path) -> float:
    from ranker.retrieval.run import load_run, run_views

    cfg, model, serving = load_run(run)
    return evaluate_model(model, run_views(cfg, serving), "test", ks=(30,))["HR@30"]


def test_ensemble_errors_name_the_run_or_flag(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "c.parquet")
    two = [str(runs["hstu"]), str(runs["short"])]
    assert main(["candidates", *two, "--split", "test", "--n", "5", "--out", out]) == 2
    err = capsys.readouterr().err
    assert str(runs["short"]) in err and "must share their data" in err
    assert (
        main(["candidates", str(runs["hstu"]), str(runs["sasrec"]), "--weights", "1", "--split", "test", "--out", out])
        == 2
    )
    assert "--weights: 1 weight(s) for 2 run(s)" in capsys.readouterr().err
    assert (
        main(
            [
                "candidates",
                str(runs["hstu"]),
                str(runs["sasrec"]),
                "--weights",
                "1",
                "-1",
                "--split",
                "test",
                "--out",
                out,
            ]
        )
        == 2
    )
    assert "> 0" in capsys.readouterr().err


def test_stage1_ensemble_weights_in_logit_units(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--logit-units counts the τ = 1 member's score times τ_1 / τ_2 = 0.05, and records the
    effective weights, which the library's ensemble ranks by (validation figure recomputed)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import stage1_ensemble
    from results_store import load_results

    from ranker.retrieval.run import run_views

    monkeypatch.setattr(stage1_ensemble, "HERE", tmp_path)
    (tmp_path / "results").mkdir()
    members = [str(runs["hstu"]), str(runs["sasrec"])]
    base = ["--runs", *members, "--grid", "0.5", "--dataset", "r-ml100k"]
    with contextlib.redirect_stdout(io.StringIO()):
        stage1_ensemble.main([*base, "--name", "logit", "--logit-units"])
        stage1_ensemble.main([*base, "--name", "raw"])
    got = load_results(tmp_path / "results" / "ensemble-r-ml100k.json")
    assert got["logit"]["weights"] == pytest.approx([1.0, 0.025])
    assert got["raw"]["weights"] == [1.0, 0.5]
    cfg, model, serving = load_ensemble([runs["hstu"], runs["sasrec"]], got["logit"]["weights"])
    valid = evaluate_model(model, run_views(cfg, serving), "valid", ks=(10, 50, 200), exclude=cfg.eval.exclude)
    assert valid["NDCG@10"] == pytest.approx(got["logit"]["valid"]["NDCG@10"], abs=2 / 943)
