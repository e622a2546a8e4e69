"""Retrieval end to end: `ranker train` on a retrieval config → run dir → evaluate → retrieve;
the shipped benchmark configs validate; faiss indexes against exact search."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from ranker.cli import main
from ranker.config import load_retrieval_config
from ranker.run_manifest import seal_run

CONFIGS = sorted((Path(__file__).parent.parent / "benchmarks" / "configs").glob("retrieval-*.yaml"))
TINY = {
    "kind": "retrieval",
    "name": "tiny",
    "data": {"dataset": "r-ml100k", "max_len": 20},
    "model": {"kind": "hstu", "dim": 8, "num_layers": 1, "linear_dim": 4, "attention_dim": 4},
    "loss": {"kind": "sampled_softmax", "num_negatives": 16},
    "train": {"epochs": 1, "max_steps_per_epoch": 3, "batch_size": 64, "progress": False},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One tiny run shared by the tests of this module (trained once)."""
    tmp = tmp_path_factory.mktemp("retrieval")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANKER_CACHE_DIR", str(tmp / "cache"))
        cfg = tmp / "tiny.yaml"
        cfg.write_text(yaml.safe_dump(TINY))
        out = tmp / "run"
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(["train", str(cfg), "--out", str(out)]) == 0
        (tmp / "printed.txt").write_text(printed.getvalue())
        yield out


def test_train_evaluate_and_retrieve(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    printed = (run_dir.parent / "printed.txt").read_text()
    assert "hstu on r-ml100k" in printed and "most-popular" in printed
    for name in ("config.yaml", "model.safetensors", "log.jsonl", "metrics.json"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["users"] == 943 and metrics["items"] == 1682
    assert set(metrics["test"]) == {"HR@10", "NDCG@10", "HR@50", "NDCG@50", "HR@200", "NDCG@200", "MRR"}

    assert main(["evaluate", str(run_dir), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(metrics["test"])

    assert main(["retrieve", str(run_dir), "--user", "1", "--k", "5"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if "item" in x and "score" in x]
    assert len(lines) == 5

    assert (
        main(
            [
                "retrieve",
                str(run_dir),
                "--history",
                "50,172,133",
                "--times",
                "880000000,880000100,880000200",
                "--k",
                "7",
            ]
        )
        == 0
    )
    shown = [int(x.split()[2]) for x in capsys.readouterr().out.splitlines() if "score" in x]
    assert len(shown) == 7 and not {50, 172, 133} & set(shown)


def test_candidates_reproduce_the_runs_hr_at_n(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq

    metrics = json.loads((run_dir / "metrics.json").read_text())
    out = tmp_path / "cands.parquet"
    assert main(["candidates", str(run_dir), "--split", "test", "--n", "50", "--out", str(out)]) == 0
    table = pq.read_table(out)
    assert table.num_rows == 943 * 50 and table.column("rank").to_pylist()[:3] == [1, 2, 3]
    hits = {
        u for u, t, i in zip(*(table.column(c).to_pylist() for c in ("user", "target", "item")), strict=True) if t == i
    }
    assert len(hits) / 943 == pytest.approx(metrics["test"]["HR@50"])
    assert f"recall@50 {metrics['test']['HR@50']:.4f}" in capsys.readouterr().out
    args = ["candidates", str(run_dir), "--split", "train-prefixes", "--n", "5", "--per-user", "2", "--out", str(out)]
    assert main(args) == 0
    prefixes = pq.read_table(out)
    assert prefixes.num_rows == 943 * 2 * 5 and set(prefixes.column("split").to_pylist()) == {"train-prefixes"}
    assert main(["candidates", str(run_dir), "--split", "valid", "--n", "5000", "--out", str(out)]) == 2
    assert "the catalogue has 1682 items" in capsys.readouterr().err


def test_retrieve_errors_are_one_line(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["retrieve", str(run_dir), "--user", "99999"]) == 2
    assert "no such user" in capsys.readouterr().err
    assert main(["retrieve", str(run_dir), "--history", "1,99999"]) == 2
    assert "unknown item id(s) 99999" in capsys.readouterr().err


def test_serving_files_are_kept_and_older_runs_still_serve(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("items.parquet", "histories.parquet", "data.json"):
        assert (run_dir / name).is_file(), name
    assert main(["retrieve", str(run_dir), "--user", "1", "--k", "4"]) == 0
    kept = capsys.readouterr().out
    old = tmp_path / "old"  # a run from before the serving files (and manifests): rebuilt from its recipe
    old.mkdir()
    for name in ("config.yaml", "model.safetensors", "metrics.json"):
        (old / name).write_bytes((run_dir / name).read_bytes())
    monkeypatch.setenv("RANKER_CACHE_DIR", str(run_dir.parent / "cache"))
    assert main(["retrieve", str(old), "--user", "1", "--k", "4"]) == 0
    assert capsys.readouterr().out == kept


def test_retrieve_with_an_ann_index(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("faiss")
    capsys.readouterr()
    assert main(["retrieve", str(run_dir), "--user", "3", "--k", "10", "--ann", "hnsw"]) == 0
    assert "faiss hnsw" in capsys.readouterr().out


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_retrieval_configs_validate(path: Path) -> None:
    cfg = load_retrieval_config(path)
    assert cfg.model.dim == 50
    if cfg.data.dataset != "r-ml100k":  # the paper's setup: 128 uniform negatives, batch 128
        assert cfg.loss.kind == "sampled_softmax" and cfg.loss.num_negatives == 128
        assert cfg.train.batch_size == 128 and cfg.train.lr == 1e-3


def test_ann_recall_against_exact_search() -> None:
    pytest.importorskip("faiss")
    from ranker.retrieval.ann import ann_report

    g = torch.Generator().manual_seed(0)
    items = torch.nn.functional.normalize(torch.randn(501, 16, generator=g), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(200, 16, generator=g), dim=1)
    report = ann_report(queries, items, k=10, kinds=("hnsw", "ivf"), nlist=16, nprobe=16)
    assert report["ivf"]["recall"] == pytest.approx(1.0)  # every cell probed: exhaustive
    assert 0.8 <= report["hnsw"]["recall"] <= 1.0
    assert report["hnsw"]["qps"] > 0 and report["exact_qps"] > 0


def test_retrieve_bad_flags_and_wrong_run_kind(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["retrieve", str(run_dir), "--history", "1,2", "--k", "0"])
    assert exc.value.code == 2 and "--k: must be at least 1, got 0" in capsys.readouterr().err
    ranking = tmp_path / "ranking-run"
    ranking.mkdir()
    (ranking / "config.yaml").write_text("data: {dataset: rk-ml100k}\n")
    seal_run(ranking, "ranking")  # a finished run (its other files do not matter here)
    assert main(["retrieve", str(ranking), "--history", "1,2"]) == 2
    assert "a ranking run; `ranker retrieve` needs a retrieval run" in capsys.readouterr().err


def test_retrieval_eval_ks_must_be_positive(tmp_path: Path) -> None:
    from ranker.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**TINY, "eval": {"ks": [10, 0]}}))
    with pytest.raises(ConfigError, match=r"eval\.ks\.1"):
        load_retrieval_config(path)


def test_an_unexpected_error_is_one_line_unless_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ranker.cli as cli

    def boom(args: object) -> int:
        raise ValueError("something broke\nsecond line")

    monkeypatch.setattr(cli, "_cmd_report", boom)
    assert main(["report", "anywhere"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "error: ranker report: unexpected ValueError: something broke "
        "(rerun with `ranker --debug ...` for the traceback)"
    )
    with pytest.raises(ValueError, match="something broke"):
        main(["--debug", "report", "anywhere"])


def test_times_must_match_the_history(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["retrieve", str(run_dir), "--history", "1,2,3", "--times", "10,20"]) == 2
    assert "--times: 2 times for 3 --history items" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
