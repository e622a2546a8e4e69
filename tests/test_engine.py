"""The one training engine: a toy family's step, selection, lr decay and exact resume; the
generative family resumes through the same engine; CUDA + bf16 where a GPU exists."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from test_generative import make_log, make_model
from torch import nn

from ranker.config.generative import GenerativeTrainConfig
from ranker.config.schema import BaseTrainConfig
from ranker.errors import ConfigError
from ranker.generative.batches import user_windows
from ranker.generative.trainer import GenerativeTrainer
from ranker.rundir import finite, write_json
from ranker.train.checkpoint import Lazy, save_tensors
from ranker.train.engine import Engine, epoch_summary, flat_scalars, pick_device

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


class Regression:
    """y = x·w* + noise; batches of 16 drawn with the epoch's generator; score = −valid MSE.

    Scripted `scores` are returned by successive validations; the first is the untrained
    weights' (validated once before a fresh start)."""

    def __init__(self, model: nn.Module, scores: list[float] | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(256, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(256, generator=g)
        self.model = model
        self.scores = scores  # scripted validation scores, to test selection and patience

    def batches(self, epoch: int, generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
        order = torch.randperm(256, generator=generator)
        for i in range(0, 256, 16):
            yield {"x": self.x[order[i : i + 16]], "y": self.y[order[i : i + 16]]}

    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> tuple[torch.Tensor, dict[str, int]]:
        pred = self.model(batch["x"]).squeeze(-1)
        return ((pred - batch["y"]) ** 2).mean(), {"samples": len(batch["y"])}

    def validate(self) -> dict[str, Any]:
        with torch.no_grad():
            mse = float(((self.model(self.x).squeeze(-1) - self.y) ** 2).mean())
        score = self.scores.pop(0) if self.scores else -mse
        return {"valid": {"mse": mse}, "valid_score": score}


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 1))


def _cfg(**kw: Any) -> BaseTrainConfig:
    return BaseTrainConfig(**{"lr": 0.01, "progress": False, "patience": 10, "device": "cpu", **kw})


def test_training_lowers_the_loss_and_counts_units(tmp_path: Path) -> None:
    model = _model()
    fit = Engine(model, _cfg(epochs=3), tmp_path).fit(Regression(model))
    h = fit.history
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert [r["train_samples"] for r in h] == [256, 256, 256]
    assert h[0]["samples_per_s"] == pytest.approx(256 / h[0]["epoch_time_s"])
    assert set(h[0]["time_split_s"]) == {"data", "forward", "backward", "optimizer"}
    assert fit.best_epoch == 3 and fit.stopped_epoch == 3


def test_step_cap_and_eval_every(tmp_path: Path) -> None:
    model = _model()
    fit = Engine(model, _cfg(epochs=5, eval_every=2, max_steps_per_epoch=3), tmp_path).fit(Regression(model))
    assert [r["train_samples"] for r in fit.history] == [48] * 5
    assert ["valid" in r for r in fit.history] == [False, True, False, True, True]  # and the last


def test_patience_lr_decay_and_the_best_weights_are_kept(tmp_path: Path) -> None:
    model = _model()
    cfg = _cfg(epochs=10, patience=1, lr_decay_on_plateau=0.5)
    fit = Engine(model, cfg, tmp_path).fit(Regression(model, scores=[0.0, 0.1, 0.3, 0.2, 0.25, 0.9]))
    assert fit.best_epoch == 2 and fit.best_score == 0.3
    assert fit.stopped_epoch == 4  # two evaluations without gain > patience 1
    assert [r["lr"] for r in fit.history] == [0.01, 0.01, 0.005, 0.0025]
    saved = load_file(str(tmp_path / "checkpoints" / "best-0002.safetensors"))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key])  # the model ends at the best epoch


def test_select_last_keeps_the_last_epoch(tmp_path: Path) -> None:
    model = _model()
    engine = Engine(model, _cfg(epochs=3, patience=0), tmp_path, select_last=True)
    fit = engine.fit(Regression(model, scores=[0.0, 0.9, 0.1, 0.0]))
    assert fit.best_epoch == 3 and fit.stopped_epoch == 3


@pytest.mark.parametrize("extra", [{}, {"ema_decay": 0.9, "lr_decay_on_plateau": 0.5}])
def test_resume_equals_uninterrupted(tmp_path: Path, extra: dict[str, Any]) -> None:
    scores = [0.0, 0.1, 0.2, 0.15, 0.3, 0.25, 0.26]  # the untrained weights', then epochs 1..6
    full = _model()
    Engine(full, _cfg(epochs=6, **extra), tmp_path / "full").fit(Regression(full, list(scores)))
    part = _model()
    Engine(part, _cfg(epochs=3, **extra), tmp_path / "part").fit(Regression(part, list(scores)))
    resumed = _model(seed=99)  # another init: everything must come from the checkpoint
    fit = Engine(resumed, _cfg(epochs=6, **extra), tmp_path / "part").fit(Regression(resumed, scores[4:]))
    assert fit.resumed_from == 3 and fit.untrained == {"valid": fit.untrained["valid"], "valid_score": 0.0}
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    log = [json.loads(x) for x in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5, 6]


def test_generative_family_resumes_through_the_engine(tmp_path: Path) -> None:
    log = make_log(n=300, users=5)
    train, valid = user_windows(log, 0, 32), user_windows(log, 1, 32)

    def run(epochs: int, out: str, seed: int = 0) -> GenerativeTrainer:
        model = make_model(log, max_events=32).train()
        if seed:
            for p in model.parameters():
                p.data.normal_()
        cfg = GenerativeTrainConfig(
            epochs=epochs, batch_cells=10**7, lr=3e-3, progress=False, patience=5, ema_decay=0.9, device="cpu"
        )
        trainer = GenerativeTrainer(model, log, cfg, tmp_path / out)
        trainer.fit(train, valid)
        return trainer

    full = run(3, "full")
    run(1, "part")
    resumed = run(3, "part", seed=7)
    # Equal up to float summation order (~1e-8, as before the engine: the generative backward
    # is not bit-reproducible across processes on CPU); a wrong resume differs by O(1).
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where no GPU exists")
def test_cuda_without_a_gpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="train.device"):
        pick_device("cuda")


@GPU
def test_cuda_trains_with_bf16_autocast(tmp_path: Path) -> None:
    model = _model()
    seen: list[torch.dtype] = []

    class Spy(Regression):
        def loss(
            self, batch: dict[str, torch.Tensor], generator: torch.Generator
        ) -> tuple[torch.Tensor, dict[str, int]]:
            seen.append(self.model(batch["x"]).dtype)
            return super().loss(batch, generator)

    fit = Engine(model, _cfg(epochs=2, device="cuda"), tmp_path).fit(Spy(model))
    assert next(model.parameters()).device.type == "cuda"
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert fit.history[-1]["train_loss"] < fit.history[0]["train_loss"]


def test_summary_and_scalars_and_strict_json(tmp_path: Path) -> None:
    record = {
        "epoch": 2,
        "train_loss": 0.5,
        "samples_per_s": 1000.0,
        "epoch_time_s": 1.0,
        "valid": {"y": {"auc": 0.75, "gauc": 0.7}},
        "valid_score": 0.75,
    }
    line = epoch_summary(record, best_epoch=2)
    assert line.startswith("epoch 2: loss 0.5000") and "y auc 0.7500 gauc 0.7000" in line
    assert line.endswith(" *")
    retrieval = {**record, "valid": {"HR@10": 0.2, "NDCG@10": 0.1, "HR@50": 0.5}}
    assert "valid HR@10 0.2000 NDCG@10 0.1000" in epoch_summary(retrieval, best_epoch=1)
    assert flat_scalars(record)["valid/y/auc"] == 0.75
    assert "epoch" not in flat_scalars(record)
    write_json(tmp_path / "m.json", {"auc": float("nan"), "n": torch.tensor(3).numpy()})
    assert json.loads((tmp_path / "m.json").read_text()) == {"auc": None, "n": 3}
    assert finite([float("-inf"), 1]) == [None, 1]


@GPU
@pytest.mark.parametrize("family", ["ranking", "retrieval", "generative"])
def test_each_family_trains_on_cuda(tmp_path: Path, family: str) -> None:
    """``train.device: cuda`` end to end through the CLI: bf16 autocast, metrics written."""
    import contextlib
    import io

    import yaml
    from test_generative_events import _config, _events
    from test_retrieval_events import MODEL, _events_csv

    from ranker.cli import main

    cuda = ["--set", "train.device=cuda", "--set", "train.epochs=2", "--set", "train.progress=false"]
    if family == "ranking":
        args = ["demo", "--set", "train.max_steps_per_epoch=5", *cuda]
    elif family == "retrieval":
        _events_csv(tmp_path / "events.csv")
        cfg = {
            "kind": "retrieval",
            "data": {
                "path": "events.csv",
                "user_column": "user",
                "item_column": "item",
                "time_column": "ts",
                "max_len": 10,
                "split": {"kind": "leave_one_out"},
            },
            "model": MODEL,
            "loss": {"kind": "full_softmax"},
        }
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(cfg))
        args = ["train", str(tmp_path / "r.yaml"), *cuda]
    else:
        _events(tmp_path / "events.parquet")
        args = ["train", str(_config(tmp_path)), *cuda]
    out = tmp_path / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*args, "--out", str(out)]) == 0
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(math.isfinite(r["train_loss"]) for r in log)
    assert json.loads((out / "metrics.json").read_text())["test"]


def test_a_run_whose_validation_never_scores_keeps_the_last_weights_and_says_so(tmp_path: Path) -> None:
    """No validation score is a number: nothing is selected, the model ends at the last epoch's
    weights (not the untrained ones), and the result says why it is not usable."""
    model = _model()
    fit = Engine(model, _cfg(epochs=2), tmp_path).fit(Regression(model, scores=[math.nan] * 3))
    assert fit.best_epoch == 0 and math.isnan(fit.untrained_score)
    problem = fit.problem()
    assert problem is not None and "no validation score was a number in 2 evaluation(s)" in problem
    assert "last epoch" in problem and fit.beats_untrained() is None and fit.untrained_warning() is None
    last = load_file(str(tmp_path / "checkpoints" / "epoch-0002.safetensors"))
    saved = load_file(str(tmp_path / "model.safetensors"))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, last[key], rtol=0, atol=0)
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("scores", "beats"),
    [([0.5, 0.6, 0.7], True), ([0.9, 0.6, 0.7], False), ([0.7, 0.6, 0.7], False), ([math.nan, 0.6, 0.7], None)],
)
def test_the_untrained_weights_are_the_reference_a_trained_epoch_must_beat(
    tmp_path: Path, scores: list[float], beats: bool | None
) -> None:
    """The untrained weights are validated once; selection stays among trained epochs, and a
    best epoch that does not beat them (a tie does not) gives a warning, not a problem."""
    model = _model()
    fit = Engine(model, _cfg(epochs=2), tmp_path).fit(Regression(model, scores=list(scores)))
    assert fit.best_epoch == 2 and fit.best_score == 0.7 and fit.problem() is None
    assert fit.beats_untrained() is beats and len(fit.history) == 2  # not an epoch record
    warning = fit.untrained_warning()
    if beats is False:
        assert warning is not None and f"score {scores[0]:.4f} before training, best 0.7000 at epoch 2" in warning
    else:
        assert warning is None
    state = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    assert state["untrained"]["valid_score"] == (None if math.isnan(scores[0]) else scores[0])


def test_orphan_temp_files_of_a_killed_write_are_removed_at_resume(tmp_path: Path) -> None:
    model = _model()
    Engine(model, _cfg(epochs=1), tmp_path).fit(Regression(model))
    orphan = tmp_path / "checkpoints" / ".epoch-0002.safetensors.k1ll3d"
    orphan.write_bytes(b"half a file")
    Engine(model, _cfg(epochs=2), tmp_path).fit(Regression(model))
    assert not orphan.exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")) == []


def test_weights_are_streamed_into_a_safetensors_file_that_the_package_reads(tmp_path: Path) -> None:
    """save_tensors writes the format itself (header, then each tensor's bytes, no serialised copy of
    the whole state): every dtype it names, 0-d, empty and non-contiguous tensors, an alias stored
    once, and Lazy tensors fetched in file order, once each; a wrong Lazy is refused, atomically."""
    a = torch.randn(3, 4)
    tensors: dict[str, Any] = {
        "a": a,
        "alias": a,  # the same memory: stored once
        "scalar": torch.tensor(5, dtype=torch.int64),
        "empty": torch.zeros(0, 3),
        "half": torch.randn(2, 2).to(torch.bfloat16),
        "mask": torch.tensor([True, False]),
        "columns": torch.arange(6, dtype=torch.int32).reshape(2, 3)[:, 1:],  # non-contiguous
    }
    order: list[str] = []

    def fetch(name: str, value: torch.Tensor) -> torch.Tensor:
        order.append(name)
        return value

    tensors["lazy1"] = Lazy(torch.float32, (2,), lambda: fetch("lazy1", torch.ones(2)))
    tensors["lazy2"] = Lazy(torch.int16, (1, 3), lambda: fetch("lazy2", torch.tensor([[1, 2, 3]], dtype=torch.int16)))
    path = tmp_path / "w.safetensors"
    save_tensors(tensors, path)
    back = load_file(str(path))
    assert order == ["lazy1", "lazy2"] and "alias" not in back
    for key, value in tensors.items():
        if key != "alias":
            expected = value.get() if isinstance(value, Lazy) else value
            assert back[key].dtype == expected.dtype and torch.equal(back[key], expected.contiguous()), key
    header_length = int.from_bytes(path.read_bytes()[:8], "little")
    assert header_length % 8 == 0
    with pytest.raises(ValueError, match=r"bad: expected torch.float32 \(4,\), got torch.float32 \(3,\)"):
        save_tensors({"ok": a, "bad": Lazy(torch.float32, (4,), lambda: torch.zeros(3))}, tmp_path / "x.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no partial file left
