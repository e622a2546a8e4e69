"""Trainer, loss, checkpoints and resumption after a kill."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from ranker.config import load_config
from ranker.config.schema import TaskConfig, TrainConfig
from ranker.data.preprocess import Preprocessor
from ranker.data.tensors import TensorData
from ranker.models import build_model
from ranker.train import Trainer, multitask_loss


def test_multitask_loss_hand_computed_and_masked_rows_have_no_gradient() -> None:
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # row 0 of task 1 is masked
    loss = multitask_loss(logits, labels, mask, torch.tensor([1.0, 0.5]))
    bce = lambda z, y: -(y * np.log(1 / (1 + np.exp(-z))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-z))))  # noqa: E731
    task0 = (bce(0.0, 1) + bce(1.0, 0)) / 2
    task1 = bce(-1.0, 1) / 1
    assert loss.item() == pytest.approx(task0 + 0.5 * task1, rel=1e-6)
    loss.backward()
    assert logits.grad is not None
    assert logits.grad[0, 1].item() == 0.0
    assert logits.grad[1, 1].item() != 0.0


def _toy(n: int = 600, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 30, n)
    item = rng.integers(0, 20, n)
    x = rng.normal(size=n)
    logit = np.where(item % 2 == 0, 1.5, -1.5) + x
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    like = ((rng.random(n) < 0.5) & (y == 1)).astype(np.int64)
    return pa.table({"user": user, "item": item.astype(str), "x": x, "y": y, "like": like})


def _setup(tmp_path: Path, epochs: int):
    cfg = load_config(
        base={
            "data": {
                "path": "unused.csv",
                "features": [
                    {"kind": "categorical", "name": "user"},
                    {"kind": "categorical", "name": "item"},
                    {"kind": "numerical", "name": "x"},
                ],
                "tasks": [{"name": "y"}, {"name": "like", "mask_column": "y"}],
                "split": {"kind": "random"},
            },
            "model": {"backbone": {"hidden": [16], "dropout": 0.2}},
            "train": {"epochs": epochs, "batch_size": 64, "patience": 10, "progress": False, "lr": 0.01},
        }
    )
    pre = Preprocessor.for_data(cfg.data).fit(_toy(seed=0))
    train = TensorData.from_encoded(pre.transform(_toy(seed=0)))
    valid = TensorData.from_encoded(pre.transform(_toy(n=200, seed=1)))
    torch.manual_seed(0)
    model = build_model(cfg.model, pre.layout())
    return cfg, model, train, valid


def test_training_learns_and_keeps_best_checkpoint(tmp_path: Path) -> None:
    cfg, model, train, valid = _setup(tmp_path, epochs=4)
    trainer = Trainer(model, cfg.train, cfg.data.tasks, tmp_path)
    result = trainer.fit(train, valid)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[-1]["valid"]["y"]["auc"] > 0.75  # item parity drives the label
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    assert set(log[0]["time_split_s"]) == {"data", "forward", "backward", "optimizer"}
    best = max(log, key=lambda r: r["valid_score"])
    assert result.best_epoch == best["epoch"]
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == sorted(
        {"epoch-0004.safetensors", "epoch-0004.optim.pt", f"best-{best['epoch']:04d}.safetensors", "last.json"}
    )
    # After fit the model holds the best epoch's weights.
    saved = load_file(str(tmp_path / "checkpoints" / f"best-{best['epoch']:04d}.safetensors"))
    for k, v in trainer.model.state_dict().items():
        if k in saved:
            assert torch.equal(saved[k], v)


class _Kill(Exception):
    pass


def _dies_in_epoch_3(train: TensorData, batch_size: int):
    """The default loss, raising _Kill at the third step of epoch 3 (after epoch 2's checkpoint)."""
    calls = {"n": 0}
    steps_per_epoch = train.num_batches(batch_size)

    def dying_loss(*args: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 2 * steps_per_epoch + 3:
            raise _Kill
        return multitask_loss(*args)

    return dying_loss


def test_resume_after_kill_equals_uninterrupted_run(tmp_path: Path) -> None:
    cfg, model, train, valid = _setup(tmp_path, epochs=4)
    Trainer(model, cfg.train, cfg.data.tasks, tmp_path / "a").fit(train, valid)
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    # Same run, killed in the middle of epoch 3 (after epoch 2's checkpoint).
    cfg, model, train, valid = _setup(tmp_path, epochs=4)
    with pytest.raises(_Kill):
        Trainer(
            model, cfg.train, cfg.data.tasks, tmp_path / "b", loss_fn=_dies_in_epoch_3(train, cfg.train.batch_size)
        ).fit(train, valid)
    state = json.loads((tmp_path / "b" / "checkpoints" / "last.json").read_text())
    assert state["epoch"] == 2
    # A fresh process: new model object, resumes from the checkpoint.
    cfg, model, train, valid = _setup(tmp_path, epochs=4)
    torch.manual_seed(123)  # different init: the checkpoint must overwrite it
    model = build_model(cfg.model, Preprocessor.for_data(cfg.data).fit(_toy()).layout())
    result = Trainer(model, cfg.train, cfg.data.tasks, tmp_path / "b").fit(train, valid)
    assert result.resumed_from == 2
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    for k, v in model.state_dict().items():
        assert torch.allclose(v, reference[k], atol=1e-6), k


def test_early_stopping_respects_patience(tmp_path: Path) -> None:
    cfg, model, train, valid = _setup(tmp_path, epochs=30)
    train_cfg = TrainConfig.model_validate({**cfg.train.model_dump(), "patience": 0, "lr": 0.1})
    result = Trainer(model, train_cfg, cfg.data.tasks, tmp_path).fit(train, valid)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    # patience 0: stop at the first epoch that does not improve
    assert result.stopped_epoch == len(log) < 30
    assert log[-1]["valid_score"] <= result.best_score


def test_stray_temp_files_do_not_break_resume(tmp_path: Path) -> None:
    cfg, model, train, valid = _setup(tmp_path, epochs=1)
    Trainer(model, cfg.train, cfg.data.tasks, tmp_path).fit(train, valid)
    (tmp_path / "checkpoints" / ".epoch-0002.safetensors.xyz").write_bytes(b"partial")
    tasks = [TaskConfig(name="y"), TaskConfig(name="like", mask_column="y")]
    train_cfg = TrainConfig.model_validate({**cfg.train.model_dump(), "epochs": 2})
    result = Trainer(model, train_cfg, tasks, tmp_path).fit(train, valid)
    assert result.resumed_from == 1 and result.stopped_epoch == 2


def test_lr_decays_on_plateau_and_embedding_l2_shrinks_tables(tmp_path: Path) -> None:
    cfg, model, train, valid = _setup(tmp_path, epochs=6)
    train_cfg = TrainConfig.model_validate(
        {**cfg.train.model_dump(), "lr": 0.05, "patience": 10, "lr_decay_on_plateau": 0.1, "embedding_l2": 0.01}
    )
    trainer = Trainer(model, train_cfg, cfg.data.tasks, tmp_path)
    trainer.fit(train, valid)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    best, lr = -1.0, 0.05  # a record's lr is the one the next epoch will use
    for r in log:
        improved = r["valid_score"] > best
        best = max(best, r["valid_score"])
        lr = lr if improved else max(lr * 0.1, 1e-6)
        assert r["lr"] == pytest.approx(lr)
    assert any(r["lr"] < 0.05 for r in log)  # some epoch failed to improve
    norm_reg = sum(p.pow(2).sum().item() for p in model.embedding_parameters())
    cfg2, model2, train2, valid2 = _setup(tmp_path, epochs=6)
    plain = TrainConfig.model_validate({**cfg2.train.model_dump(), "lr": 0.05, "patience": 10})
    Trainer(model2, plain, cfg2.data.tasks, tmp_path / "plain").fit(train2, valid2)
    assert norm_reg < sum(p.pow(2).sum().item() for p in model2.embedding_parameters())


def test_weight_average_by_hand_with_warm_up_and_copied_buffers() -> None:
    from ranker.train.ema import WeightAverage

    model = torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([1.0, 2.0]))
    ema = WeightAverage(model, decay=0.5)
    assert ema.rate() == pytest.approx(min(0.5, 2 / 11))
    with torch.no_grad():
        model.weight.copy_(torch.tensor([3.0, 6.0]))
    model.num_batches_tracked += 4
    model.running_mean.fill_(float("inf"))  # a buffer may hold inf (bin edges): never averaged
    ema.update()  # d_1 = 2/11
    want = 2 / 11 * torch.tensor([1.0, 2.0]) + 9 / 11 * torch.tensor([3.0, 6.0])
    torch.testing.assert_close(ema.shadow["weight"], want)
    assert int(ema.shadow["num_batches_tracked"]) == 4
    assert torch.isinf(ema.shadow["running_mean"]).all()
    ema.update()  # d_2 = 3/12
    torch.testing.assert_close(ema.shadow["weight"], 0.25 * want + 0.75 * torch.tensor([3.0, 6.0]))
    assert torch.isinf(ema.shadow["running_mean"]).all()  # averaging inf with inf gives NaN
    with ema.applied(model):
        torch.testing.assert_close(model.weight.detach(), ema.shadow["weight"])
    torch.testing.assert_close(model.weight.detach(), torch.tensor([3.0, 6.0]))
    with pytest.raises(ValueError, match="ema_decay"):
        WeightAverage(model, decay=1.0)


def _ema_setup(tmp_path: Path):
    cfg, model, train, valid = _setup(tmp_path, epochs=4)
    train_cfg = TrainConfig.model_validate({**cfg.train.model_dump(), "ema_decay": 0.9})
    return train_cfg, cfg, model, train, valid


def test_weight_average_selects_saves_and_resumes(tmp_path: Path) -> None:
    from ranker.train.evaluate import predict, selection_score, task_metrics

    train_cfg, cfg, model, train, valid = _ema_setup(tmp_path)
    trainer = Trainer(model, train_cfg, cfg.data.tasks, tmp_path / "a")
    result = trainer.fit(train, valid)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    # The model now holds the averaged weights of the best epoch, and they score what
    # validation recorded (validation saw the average, not the raw weights).
    t = valid.tensors
    probs = predict(model, valid, 512, torch.device("cpu"), trainer.spec.outputs)
    metrics = task_metrics(
        probs, t["labels"].numpy(), t["label_mask"].numpy(), [x.name for x in cfg.data.tasks], None, trainer.spec.kinds
    )
    assert selection_score(metrics) == pytest.approx(result.best_score, abs=1e-9)
    raw = load_file(str(tmp_path / "a" / "checkpoints" / "epoch-0004.safetensors"))
    assert not all(torch.equal(raw[k], v) for k, v in reference.items() if k in raw)
    assert (tmp_path / "a" / "checkpoints" / "epoch-0004.ema.safetensors").is_file()

    # Killed in epoch 3, resumed by a fresh process: the same averaged weights at the end.
    train_cfg, cfg, model, train, valid = _ema_setup(tmp_path)
    with pytest.raises(_Kill):
        Trainer(
            model, train_cfg, cfg.data.tasks, tmp_path / "b", loss_fn=_dies_in_epoch_3(train, cfg.train.batch_size)
        ).fit(train, valid)
    train_cfg, cfg, model, train, valid = _ema_setup(tmp_path)
    Trainer(model, train_cfg, cfg.data.tasks, tmp_path / "b").fit(train, valid)
    for k, v in model.state_dict().items():
        assert torch.allclose(v, reference[k], atol=1e-6), k
    # A run checkpointed without the average cannot silently resume with one.
    cfg, model, train, valid = _setup(tmp_path, epochs=1)
    Trainer(model, cfg.train, cfg.data.tasks, tmp_path / "c").fit(train, valid)
    train_cfg, cfg, model, train, valid = _ema_setup(tmp_path)
    with pytest.raises(ValueError, match="ema_decay"):
        Trainer(model, train_cfg, cfg.data.tasks, tmp_path / "c").fit(train, valid)


@pytest.mark.parametrize("metric", ["gauc", "ndcg@10"])
def test_select_metric_selects_on_the_group_metric(tmp_path: Path, metric: str) -> None:
    """train.select_metric: the epoch's valid_score is the binary tasks' mean group metric, and
    the saved epoch is the best by it; without data.group_column the config is refused."""
    cfg, model, train, valid = _setup(tmp_path, epochs=3)
    train_cfg = TrainConfig.model_validate({**cfg.train.model_dump(), "select_metric": metric})
    groups = _toy(n=200, seed=1).column("user").to_numpy()
    result = Trainer(model, train_cfg, cfg.data.tasks, tmp_path).fit(train, valid, groups)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    for r in log:
        want = np.mean([r["valid"][t][metric] for t in ("y", "like")])
        assert r["valid_score"] == pytest.approx(want) and r["valid_score"] != pytest.approx(
            np.mean([r["valid"][t]["auc"] for t in ("y", "like")])
        )
    assert result.best_epoch == max(log, key=lambda r: r["valid_score"])["epoch"]
    base = {
        "data": {
            "path": "unused.csv",
            "features": [{"kind": "categorical", "name": "user"}],
            "tasks": [{"name": "y"}],
            "split": {"kind": "random"},
        },
        "train": {"select_metric": metric},
    }
    with pytest.raises(Exception, match=f"train.select_metric: {metric} is computed per group"):
        load_config(base=base)
    assert load_config(base={**base, "data": {**base["data"], "group_column": "user"}}).train.select_metric == metric
