"""Data parallelism: ``torchrun --nproc_per_node 2 -m ranker train`` on CPU (gloo).

The feature ranker's 2-process run trains the same global batches as one process, so its
validation metrics and weights match one process's up to float summation order (tolerances
below); only rank 0 writes; a 2-process checkpoint resumes to the uninterrupted run exactly; a
batch the processes do not divide is refused. Retrieval and generative runs train on 2 processes
to a sealed run directory. Process-free tests cover the pieces (world, batch shares, shards).

Tolerances (one process vs two, same seed, dropout 0): the two runs add the same per-row
gradients in another order (each rank's mean over its 32 rows, then the mean over the ranks,
against one mean over 64 rows), a relative difference of ~1e-7 per step in float32. Measured on
this test's data (2 epochs, 16 steps): weights within 6e-8, epoch losses within 5e-8 relative,
valid / test AUC and GAUC equal. The bounds leave a 100x margin (weights 1e-5, losses 1e-5
relative) and room for a few score swaps in AUC / GAUC (1e-3; one swap of 256 rows moves AUC by
≈ 6e-5), and still fail a run with another global batch: batch 128 instead of 64 moves the
epoch-1 loss by 6e-3 relative and the valid AUC by 9e-3.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from safetensors.torch import load_file
from torch import nn

import ranker
from ranker.cli import main
from ranker.config import load_config
from ranker.config.schema import BaseTrainConfig
from ranker.data.synth import SynthSpec, write_synth
from ranker.distributed import (
    World,
    all_gather_variable,
    all_reduce_sum,
    broadcast_object,
    check_global_batch,
    world_from_env,
)
from ranker.errors import ConfigError
from ranker.ranking import run as run_module
from ranker.retrieval.batches import SeqBatch
from ranker.train.engine import Engine

SRC = Path(ranker.__file__).resolve().parents[1]
WEIGHT_ATOL, METRIC_ATOL, LOSS_RTOL = 1e-5, 1e-3, 1e-5

RANKING: dict[str, Any] = {
    "name": "ddp-tiny",
    "data": {
        "split": {"kind": "files", "train": "train.csv", "valid": "valid.csv", "test": "test.csv"},
        "features": [
            {"kind": "categorical", "name": "user"},
            {"kind": "categorical", "name": "item"},
            {"kind": "numerical", "name": "x"},
        ],
        "tasks": [{"name": "y"}],
        "group_column": "user",
    },
    "model": {"encoders": {"categorical": {"dim": 4}}, "backbone": {"hidden": [16], "dropout": 0.0}},
    "train": {
        "epochs": 2,
        "batch_size": 64,
        "lr": 0.01,
        "patience": 5,
        "seed": 0,
        "device": "cpu",
        "threads": 1,
        "progress": False,
    },
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _launch(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    """``python ARGS`` in a session of its own (a launcher and its workers are killed together)."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait(procs: list[subprocess.Popen[str]], timeout: float = 180) -> list[subprocess.CompletedProcess[str]]:
    """Every process's exit status and output; on a timeout, each process group is killed."""
    done = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
    return done


def _train(cfg: Path, out: Path, procs: int, *overrides: str) -> subprocess.CompletedProcess[str]:
    """``ranker train CFG --out OUT --set …`` as one process, or on `procs` processes under
    ``torchrun --standalone`` (gloo)."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] if procs > 1 else []
    sets = [x for o in overrides for x in ("--set", o)]
    return _wait([_launch([*launcher, "-m", "ranker", "train", str(cfg), "--out", str(out), *sets], cfg.parent)])[0]


def _train_two_nodes(cfg: Path, out: Path) -> None:
    """Two torchrun agents (``--nnodes 2``, one process each) meeting at a c10d rendezvous, as two
    hosts would (docs/distributed.md); here both on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rdzv = ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}"]
    args = ["-m", "torch.distributed.run", *rdzv, "--rdzv-id=ddp-test", "-m", "ranker", "train", str(cfg)]
    for done in _wait([_launch([*args, "--out", str(out)], cfg.parent) for _ in range(2)]):
        _ok(done)


def _ok(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _log(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def _metrics(run: Path) -> dict[str, Any]:
    return dict(json.loads((run / "metrics.json").read_text()))


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


def _ranking_data(root: Path) -> Path:
    """Train / valid / test CSVs (512 / 256 / 256 rows) and the config; `y` depends on the item's
    parity and on `x`."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 512), ("valid", 256), ("test", 256)):
        user, item, x = rng.integers(0, 30, n), rng.integers(0, 20, n), rng.normal(size=n)
        y = (rng.random(n) < 1 / (1 + np.exp(-(np.where(item % 2 == 0, 1.5, -1.5) + x)))).astype(int)
        rows = ["user,item,x,y"] + [f"u{u},i{i},{v:.6f},{t}" for u, i, v, t in zip(user, item, x, y, strict=True)]
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    (root / "ranking.yaml").write_text(yaml.safe_dump(RANKING))
    return root / "ranking.yaml"


@pytest.fixture(scope="module")
def ranking_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One process; two processes; two processes stopped after epoch 1, then resumed to epoch 2."""
    root = tmp_path_factory.mktemp("ddp-ranking")
    cfg = _ranking_data(root)
    runs = {"one": root / "one", "two": root / "two", "resumed": root / "resumed"}
    _ok(_train(cfg, runs["one"], 1))
    _train_two_nodes(cfg, runs["two"])  # the multi-node recipe of docs/distributed.md, on one host
    _ok(_train(cfg, runs["resumed"], 2, "train.epochs=1"))
    _ok(_train(cfg, runs["resumed"], 2))  # resumes the 2-process checkpoint after epoch 1
    return runs


def assert_same_run(one: Path, two: Path) -> None:
    """Two runs of the 512-row data agree per epoch (rows counted once, loss, valid score) and on
    the valid / test AUC and GAUC, within the tolerances above."""
    for a, b in zip(_log(one), _log(two), strict=True):
        assert b["train_samples"] == a["train_samples"] == 512  # both ranks' rows counted once
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=LOSS_RTOL)
        assert b["valid_score"] == pytest.approx(a["valid_score"], abs=METRIC_ATOL)
    m1, m2 = _metrics(one), _metrics(two)
    for split in ("valid", "test"):
        for key in ("auc", "gauc"):
            assert m2[split]["y"][key] == pytest.approx(m1[split]["y"][key], abs=METRIC_ATOL), (split, key)


def test_two_processes_match_one_process_with_the_same_global_batch(ranking_runs: dict[str, Path]) -> None:
    one, two = ranking_runs["one"], ranking_runs["two"]
    assert [r["epoch"] for r in _log(two)] == [1, 2]  # rank 1 appended nothing
    assert_same_run(one, two)
    m1, m2 = _metrics(one), _metrics(two)
    for split in ("valid", "test"):
        assert m2[split]["y"]["logloss"] == pytest.approx(m1[split]["y"]["logloss"], rel=LOSS_RTOL)
        assert m2[split]["y"]["rows"] == m1[split]["y"]["rows"] == 256  # the full set, not rank 0's half
    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=0, atol=WEIGHT_ATOL)


def test_only_rank_0_writes_the_run_directory(ranking_runs: dict[str, Path]) -> None:
    one, two = ranking_runs["one"], ranking_runs["two"]
    assert _files(two) == _files(one)
    assert {"config.yaml", "model.safetensors", "metrics.json", "manifest.json", "log.jsonl"} <= _files(two)
    assert not any(p.name.startswith(".") for p in two.rglob("*"))  # no temporary file left by a second writer
    assert main(["evaluate", str(two), "--split", "valid"]) == 0  # the 2-process run verifies and loads


def test_a_two_process_checkpoint_resumes_to_the_uninterrupted_run(ranking_runs: dict[str, Path]) -> None:
    two, resumed = ranking_runs["two"], ranking_runs["resumed"]
    for a, b in zip(_log(two), _log(resumed), strict=True):
        assert b["epoch"] == a["epoch"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)
        assert b["valid_score"] == pytest.approx(a["valid_score"], abs=1e-6)
    w, r = load_file(str(two / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for key in w:
        torch.testing.assert_close(r[key], w[key], rtol=0, atol=1e-6)


def test_a_batch_the_processes_do_not_divide_is_refused_before_any_work(tmp_path: Path) -> None:
    cfg = _ranking_data(tmp_path)
    done = _train(cfg, tmp_path / "run", 2, "train.batch_size=63")
    assert done.returncode != 0
    assert "error: train.batch_size: 63 is the global batch" in done.stderr
    assert "multiple of the 2 processes; use 62 or 64" in done.stderr
    assert not (tmp_path / "run").exists()


def test_distillation_is_refused_on_several_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "current", lambda: World(1, 2, 1))
    with pytest.raises(ConfigError, match=r"^--teacher: distillation runs in one process, not under torchrun$"):
        run_module.train_run(load_config(base=RANKING), tmp_path / "run", teacher=tmp_path / "teacher")
    assert not (tmp_path / "run").exists()  # refused before any work


def test_a_streamed_train_split_trains_on_two_processes(tmp_path: Path) -> None:
    """``data.stream`` under torchrun: each rank reads its own share of the parquet files per epoch
    (tests/test_stream.py checks the shares); the run counts every row once and reaches the
    1-process streamed run's validation AUC. Not step for step (the ranks shuffle their shares
    apart), so the tolerance is a few times the seed spread: three seeds of one process reach
    0.720 to 0.729 valid AUC on this data (measured once; untrained 0.51 to 0.54)."""
    write_synth(SynthSpec(rows=6000, cardinality=300, files=4, categorical=4, eval_rows=1500), tmp_path)
    cfg = tmp_path / "synth.yaml"
    sets = ("data.stream.chunk_rows=500", "data.stream.shuffle_buffer=1000", "train.epochs=2", "train.batch_size=128")
    _ok(_train(cfg, tmp_path / "one", 1, *sets))
    _ok(_train(cfg, tmp_path / "two", 2, *sets))
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert one["rows"]["train"] == two["rows"]["train"] == 6000
    assert [r["train_samples"] for r in _log(tmp_path / "two")] == [6000, 6000]
    a, b = one["valid"]["click"]["auc"], two["valid"]["click"]["auc"]
    assert a > 0.68 and abs(a - b) < 0.03, (a, b)
    assert _files(tmp_path / "two") == _files(tmp_path / "one")


# ---------------------------------------------------------------------------- the other families
def _events(root: Path) -> None:
    """events.csv (retrieval) and events.parquet (generative): 40 users x 12 events over 30 items."""
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(40), 12)
    items = (users % 3 + 3 * rng.integers(0, 10, len(users))).astype(int)
    times = 1_700_000_000 + rng.permutation(len(users)) * 60  # every user spans the whole period
    rating = rng.integers(1, 4, len(users))
    lines = ["user,item,ts"] + [f"u{u},i{i},{t}" for u, i, t in zip(users, items, times, strict=True)]
    (root / "events.csv").write_text("\n".join(lines) + "\n")
    table = {
        "user": [f"u{u}" for u in users],
        "item": [f"i{i}" for i in items],
        "ts": times,
        "action": [("view", "cart", "buy")[r - 1] for r in rating],
        "click": np.ones(len(users), dtype=np.int64),
        "buy": (rating == 3).astype(np.int64),
    }
    pq.write_table(pa.table(table), root / "events.parquet")


FAMILIES = {
    "retrieval": {
        "kind": "retrieval",
        "name": "ddp-sasrec",
        "data": {"path": "events.csv", "user_column": "user", "item_column": "item", "time_column": "ts"},
        "model": {"kind": "sasrec", "dim": 8, "num_layers": 1, "ff_dim": 8, "dropout": 0.0},
        "loss": {"kind": "sampled_softmax", "num_negatives": 8},
        "train": {"epochs": 2, "batch_size": 8, "progress": False, "device": "cpu", "threads": 1},
    },
    "generative": {
        "kind": "generative",
        "name": "ddp-generative",
        "data": {
            "path": "events.parquet",
            "user_column": "user",
            "item_column": "item",
            "time_column": "ts",
            "action_column": "action",
            "tasks": [{"name": "click", "column": "click"}, {"name": "buy", "column": "buy", "mask_column": "click"}],
            "negatives": {"per_event": 2, "seed": 0},
            "split": {"kind": "time", "fractions": [0.8, 0.1, 0.1]},
            "max_events": 8,
        },
        "model": {"dim": 8, "num_layers": 1, "linear_dim": 4, "attention_dim": 4, "dropout": 0.0},
        "train": {"epochs": 2, "max_batch_size": 4, "progress": False, "device": "cpu", "threads": 1},
    },
}


@pytest.mark.parametrize("kind", sorted(FAMILIES))
def test_retrieval_and_generative_train_on_two_processes(kind: str, tmp_path: Path) -> None:
    _events(tmp_path)
    cfg = tmp_path / f"{kind}.yaml"
    cfg.write_text(yaml.safe_dump(FAMILIES[kind]))
    done = _train(cfg, tmp_path / "run", 2)
    _ok(done)
    log = _log(tmp_path / "run")
    assert [r["epoch"] for r in log] == [1, 2]  # one writer
    assert all("valid_score" in r for r in log)
    metrics = _metrics(tmp_path / "run")
    assert metrics["stopped_epoch"] == 2 and "test" in metrics
    assert main(["evaluate", str(tmp_path / "run")]) == 0  # sealed by rank 0, verifies
    assert done.stdout.count("run directory:") == 1  # rank 0 alone prints the summary


def test_retrieval_on_two_processes_matches_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    """Each rank trains every other sequence of the one-process batch (``SeqBatch.shard``), its
    loss weighted by its share of the step's targets, so the step is the one-process step. With
    the full softmax (no sampled negatives, which each rank would draw apart) and dropout 0 the
    runs agree up to summation order (measured: epoch losses within 4e-8 relative, equal valid
    NDCG@10); the tolerances are the feature ranker's. The generative family is not compared:
    a step there trains one planned batch per rank, W times the one-process step (its docstring)."""
    _events(tmp_path)
    cfg = tmp_path / "retrieval.yaml"
    cfg.write_text(yaml.safe_dump({**FAMILIES["retrieval"], "loss": {"kind": "full_softmax"}}))
    _ok(_train(cfg, tmp_path / "one", 1))
    _ok(_train(cfg, tmp_path / "two", 2))
    log1, log2 = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert len(log1) == len(log2) == 2
    for a, b in zip(log1, log2, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=LOSS_RTOL)
        assert b["valid_score"] == pytest.approx(a["valid_score"], abs=METRIC_ATOL)
    assert log2[1]["train_loss"] != pytest.approx(log2[0]["train_loss"], rel=1e-3)  # it trained


# ---------------------------------------------------------------------------- without processes
def test_world_from_torchrun_environment() -> None:
    assert world_from_env({}) == World(0, 1, 0)
    assert world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    assert World(1, 2, 1).distributed and not World(1, 2, 1).writer
    with pytest.raises(ConfigError, match=r"\$WORLD_SIZE: 'two' is not an integer"):
        world_from_env({"WORLD_SIZE": "two"})
    with pytest.raises(ConfigError, match="expected 0 <= RANK < WORLD_SIZE"):
        world_from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_the_global_batch_is_shared_by_the_processes() -> None:
    assert check_global_batch(64, world=World(0, 1, 0)) == 64
    assert check_global_batch(64, world=World(1, 4, 1)) == 16
    with pytest.raises(ConfigError, match=r"^train.batch_size: 6 is the global batch .* 4 processes; use 4 or 8$"):
        check_global_batch(6, world=World(0, 4, 0))
    with pytest.raises(ConfigError, match="processes; use 4$"):
        check_global_batch(3, world=World(0, 4, 0))


def test_collectives_are_the_identity_in_one_process() -> None:
    t = torch.arange(6.0).reshape(3, 2)
    assert all_gather_variable(t) is t
    assert all_reduce_sum([1, 2.5]) == [1.0, 2.5]
    record = {"valid_score": float("nan")}
    assert broadcast_object(record) is record


def test_retrieval_batch_shards_partition_its_users() -> None:
    items = torch.tensor([[0, 1, 2], [0, 0, 3], [4, 5, 6], [0, 7, 8], [0, 0, 9]])
    batch = SeqBatch(items, items + 100, None, None)
    shards = [batch.shard(r, 2) for r in range(2)]
    assert shards[0] is not None and shards[1] is not None
    assert shards[0].items.tolist() == [[0, 1, 2], [4, 5, 6]]  # rows 0 and 2 (the longest holds 3 items)
    assert shards[1].items.tolist() == [[0, 3], [7, 8]]  # rows 1 and 3, trimmed; row 4 (the 5th of 2 ranks) left out
    assert batch.shard(0, 8) is None  # fewer users than ranks: every rank skips the batch


def test_other_commands_refuse_to_run_under_torchrun(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["datasets", "list"]) == 2
    assert "error: ranker datasets: started as one of 2 processes (torchrun)" in capsys.readouterr().err


# ---------------------------------------------------------------------------- two processes, in-process spawn
class _MeanSquares:
    """A family whose ranks hold different numbers of rows: loss = mean over the rank's rows."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.x, self.y = model, x, y

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[None]:
        yield None

    def loss(self, batch: None, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, int]]:
        return ((self.model(self.x).squeeze(-1) - self.y) ** 2).mean(), {"samples": len(self.y)}

    def validate(self) -> dict[str, Any]:
        return {"valid": {}, "valid_score": 0.0}


def _two_ranks(rank: int, port: int, run_dir: str) -> None:
    """Rank 0 holds 3 rows, rank 1 one row: the collectives and one engine step, checked on both."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        gathered = all_gather_variable(torch.full((3 - 2 * rank, 2), float(rank)))  # 3 rows, then 1
        assert gathered.tolist() == [[0.0, 0.0]] * 3 + [[1.0, 1.0]]
        assert all_reduce_sum([rank + 1, 0.25]) == [3.0, 0.5]
        record = broadcast_object({"valid_score": 0.5 if rank == 0 else -1.0, "auc": [float("nan"), 0.75]})
        assert record["valid_score"] == 0.5 and math.isnan(record["auc"][0]) and record["auc"][1] == 0.75

        torch.manual_seed(0)
        model = nn.Linear(2, 1)
        x = torch.tensor([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0], [-1.0, 1.0]])
        y = torch.tensor([1.0, 0.0, 2.0, -1.0])
        reference = copy.deepcopy(model)
        ((reference(x).squeeze(-1) - y) ** 2).mean().backward()  # the mean over all 4 rows
        mine = slice(0, 3) if rank == 0 else slice(3, 4)
        cfg = BaseTrainConfig(progress=False, clip_grad_norm=None, device="cpu")
        engine = Engine(model, cfg, Path(run_dir), world=World(rank, 2, 0))
        engine.step(_MeanSquares(model, x[mine], y[mine]), None, torch.Generator())
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            assert p.grad is not None and q.grad is not None
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7)
        dist.barrier()  # as `process_group` does: no rank tears gloo down while the other still talks
    finally:
        dist.destroy_process_group()


def test_collectives_and_the_step_of_ranks_with_different_row_counts(tmp_path: Path) -> None:
    """The gradient of a step is the mean over every rank's rows (rank 0: 3 rows, rank 1: 1), not
    the mean of the two ranks' means; gathers keep rank order; the broadcast keeps NaN."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_two_ranks, args=(port, str(tmp_path)), nprocs=2, join=True)
