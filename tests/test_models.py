"""The baseline ranker: assembly from the config, shapes, gradients, shared tables, export."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from ranker.config import load_config
from ranker.data.preprocess import Preprocessor
from ranker.data.tensors import TensorData
from ranker.errors import ConfigError
from ranker.models import build_model
from ranker.models.registry import BACKBONES
from ranker.nn import MLP
from ranker.nn.embeddings import masked_mean


def _data() -> tuple[object, TensorData]:
    rng = np.random.default_rng(0)
    n = 64
    hist = [list(rng.integers(0, 10, rng.integers(0, 5))) for _ in range(n)]
    table = pa.table(
        {
            "user": rng.integers(0, 5, n),
            "item": rng.integers(0, 10, n),
            "tags": ["a|b", "c", "", "b"] * (n // 4),
            "x": rng.normal(size=n),
            "vec": [list(rng.normal(size=3)) for _ in range(n)],
            "hist_item": hist,
            "hist_action": [[1] * len(h) for h in hist],
            "y": rng.integers(0, 2, n),
            "z": rng.integers(0, 2, n),
        }
    )
    cfg = load_config(
        base={
            "data": {
                "path": "x.csv",
                "split": {"kind": "random"},
                "features": [
                    {"kind": "categorical", "name": "user"},
                    {"kind": "categorical", "name": "item"},
                    {"kind": "multi_categorical", "name": "tags"},
                    {"kind": "numerical", "name": "x"},
                    {"kind": "dense", "name": "vec", "dim": 3},
                    {
                        "kind": "history",
                        "name": "h",
                        "item_column": "hist_item",
                        "item_feature": "item",
                        "action_column": "hist_action",
                        "max_len": 4,
                    },
                ],
                "tasks": [{"name": "y"}, {"name": "z"}],
            },
            "model": {"encoders": {"categorical": {"dim": 8}}, "backbone": {"hidden": [16, 8]}},
        }
    )
    pre = Preprocessor.for_data(cfg.data).fit(table)
    return cfg, pre, TensorData.from_encoded(pre.transform(table))


def test_forward_shape_and_every_parameter_gets_gradient() -> None:
    cfg, pre, data = _data()
    model = build_model(cfg.model, pre.layout())
    batch = next(data.batches(64))
    logits = model(batch)
    assert logits.shape == (64, 2)
    logits.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_history_shares_the_item_table() -> None:
    cfg, pre, _ = _data()
    model = build_model(cfg.model, pre.layout())
    assert model.histories[0].items is model.embeddings and model.histories[0].owner == "item"


def test_masked_mean_ignores_padding_and_empty_rows_are_zero() -> None:
    table = torch.tensor([[9.0, 9.0], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    ids = torch.tensor([[0, 1, 3], [0, 0, 0], [2, 2, 0]])
    out = masked_mean(table[ids], ids > 0)
    assert torch.allclose(out, torch.tensor([[3.0, 4.0], [0.0, 0.0], [3.0, 4.0]]))


def test_torch_export_of_the_assembled_ranker_matches_eager() -> None:
    cfg, pre, data = _data()
    model = build_model(cfg.model, pre.layout()).eval()
    batch = next(data.batches(64))
    exported = torch.export.export(model, (batch,))
    assert torch.allclose(exported.module()(batch), model(batch), atol=1e-6)


def test_a_new_backbone_kind_plugs_in_through_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, pre, data = _data()
    calls = []

    def tiny(c: object, in_dim: int) -> tuple[torch.nn.Module, int]:
        calls.append(in_dim)
        return MLP(in_dim, [4]), 4

    monkeypatch.setitem(BACKBONES, "mlp", tiny)
    model = build_model(cfg.model, pre.layout())
    assert calls and model(next(data.batches(8))).shape == (8, 2)


def test_model_without_tasks_is_a_config_error() -> None:
    cfg, pre, _ = _data()
    layout = pre.layout()
    empty = type(layout)(**{**layout.__dict__, "tasks": []})
    with pytest.raises(ConfigError, match="data.tasks"):
        build_model(cfg.model, empty)


@pytest.mark.parametrize(
    "model_cfg",
    [
        {"interaction": {"kind": "cross", "num_layers": 2}},
        {"interaction": {"kind": "cross", "structure": "stacked", "projection": 16, "rank": 8}},
        {"interaction": {"kind": "cross", "structure": "parallel", "rank": 4, "num_experts": 4}},
        {"interaction": {"kind": "cross", "structure": "cross_only"}},
        {"backbone": {"kind": "resnet", "width": 16, "num_blocks": 2, "hidden": 32}},
        {"backbone": {"kind": "densenet", "num_blocks": 2, "growth": 8}},
        {"interaction": {"kind": "cross", "structure": "parallel"}, "backbone": {"kind": "densenet", "growth": 4}},
    ],
)
def test_every_interaction_and_backbone_combination_trains_one_step(model_cfg: dict) -> None:
    cfg, pre, data = _data()
    from ranker.config.schema import ModelConfig

    model = build_model(
        ModelConfig.model_validate({"encoders": {"categorical": {"dim": 8}}, **model_cfg}), pre.layout()
    )
    batch = next(data.batches(64))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = model(batch).detach()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch["labels"])
    loss.backward()
    opt.step()
    assert model(batch).shape == (64, 2) and not torch.equal(model(batch).detach(), before)
    exported = torch.export.export(model.eval(), (batch,))
    assert torch.allclose(exported.module()(batch), model(batch), atol=1e-5)


def test_mixture_without_rank_is_a_config_error() -> None:
    from ranker.config.schema import ModelConfig

    with pytest.raises(ValueError, match="needs a low rank"):
        ModelConfig.model_validate({"interaction": {"kind": "cross", "num_experts": 4}})


@pytest.mark.parametrize(
    "history",
    [
        {"kind": "none"},
        {"kind": "mean"},
        {"kind": "din", "hidden": [8]},
        {"kind": "transact", "num_layers": 1, "k_recent": 2, "recent_mask": 2},
        {"kind": "transact", "early_fusion": False, "recent_mask": None},
        {"kind": "transact", "early_fusion": False, "target_attention": True},
    ],
)
def test_every_history_encoder_trains_and_exports(history: dict) -> None:
    cfg, pre, data = _data()
    from ranker.config.schema import ModelConfig

    model = build_model(
        ModelConfig.model_validate({"encoders": {"categorical": {"dim": 8}}, "history": history}), pre.layout()
    )
    assert len(model.histories) == (0 if history["kind"] == "none" else 1)
    batch = next(data.batches(64))
    model(batch).sum().backward()
    model.eval()
    exported = torch.export.export(model, (batch,))
    assert torch.allclose(exported.module()(batch), model(batch), atol=1e-5)


def test_time_encoding_without_times_is_a_config_error() -> None:
    cfg, pre, _ = _data()
    from ranker.config.schema import ModelConfig

    with pytest.raises(ConfigError, match="time_encoding"):
        build_model(ModelConfig.model_validate({"history": {"kind": "transact", "time_encoding": True}}), pre.layout())


@pytest.mark.parametrize(
    ("history", "rows"),
    [
        ({"kind": "none"}, None),
        ({"kind": "mean", "recent": 2}, 1),
        ({"kind": "din", "hidden": [8]}, 64),
        ({"kind": "transact", "num_layers": 1}, 64),  # early fusion: the transformer runs per row
        ({"kind": "transact", "early_fusion": False}, 1),
        ({"kind": "transact", "early_fusion": False, "target_attention": True}, 1),
    ],
)
def test_score_one_user_equals_forward_on_the_history_repeated(history: dict, rows: int | None) -> None:
    from ranker.config.schema import ModelConfig

    _, pre, data = _data()
    torch.manual_seed(0)
    model = build_model(
        ModelConfig.model_validate({"encoders": {"categorical": {"dim": 8}}, "history": history}), pre.layout()
    ).eval()
    batch = next(data.batches(64))
    user = int(batch["hist/h/mask"].sum(1).argmax())  # a row with a history
    once = {k: v[user : user + 1] if k.startswith("hist/") else v for k, v in batch.items()}
    repeated = {k: v.expand(64, *v.shape[1:]) if k.startswith("hist/") else v for k, v in once.items()}
    seen: list[int] = []  # rows through the history's costly part: the transformer, or the whole encoder
    for h in model.histories:
        getattr(h, "encoder", h).register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    with torch.no_grad():
        torch.testing.assert_close(model.score_one_user(once), model(repeated), atol=1e-5, rtol=1e-5)
    assert seen == ([] if rows is None else [rows, 64])
