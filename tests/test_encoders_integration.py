"""Categorical and numerical encoders wired through preprocessing, the config and the model."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from ranker.config.schema import DataConfig, ModelConfig
from ranker.data.numeric import NumericState, apply_numeric, fit_numeric
from ranker.data.preprocess import MISSING_RAW, Preprocessor
from ranker.data.tensors import TensorData
from ranker.hashing import stable_string_hash
from ranker.models import build_model
from ranker.models.numeric_block import ple_settings
from ranker.models.registry import categorical_ids


def _data_cfg(**num: object) -> DataConfig:
    return DataConfig.model_validate(
        {
            "path": "x.csv",
            "split": {"kind": "random"},
            "features": [
                {"kind": "categorical", "name": "user"},
                {"kind": "categorical", "name": "item"},
                {"kind": "multi_categorical", "name": "tags"},
                {"kind": "numerical", "name": "price", **num},
                {"kind": "numerical", "name": "age", "transform": "bins", "n_bins": 4},
                {"kind": "history", "name": "h", "item_column": "hist", "item_feature": "item", "max_len": 3},
            ],
            "tasks": [{"name": "y"}],
        }
    )


def _table(n: int = 80, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    price = rng.lognormal(size=n)
    price[:3] = [np.nan, np.inf, -np.inf]
    return pa.table(
        {
            "user": [f"u{i}" for i in rng.integers(0, 9, n)],
            "item": rng.integers(0, 20, n),
            "tags": ["a|b", "c", "", "b"] * (n // 4),
            "price": price,
            "age": rng.integers(18, 70, n).astype(float),
            "hist": [list(rng.integers(0, 20, rng.integers(0, 4))) for _ in range(n)],
            "y": rng.integers(0, 2, n),
        }
    )


def test_hash_mode_emits_stable_raw_ids_and_unseen_values_keep_their_identity() -> None:
    data = _data_cfg()
    pre = Preprocessor.for_data(data, ids="hash").fit(_table())
    new = pa.table(
        {
            **{c: _table(4, 1).column(c) for c in _table(4, 1).column_names},
            "user": ["never-seen", None, "u1", "never-seen"],
        }
    )
    enc = pre.transform(new)
    users = enc.cat["user"]
    assert users[0] == users[3] == stable_string_hash(["never-seen"])[0]
    assert users[1] == MISSING_RAW and users[2] == stable_string_hash(["u1"])[0]
    vocab = Preprocessor.for_data(data).fit(_table()).transform(new).cat["user"]
    assert vocab[0] == vocab[3] == 1  # plain tables: OOV


def test_tree_all_bins_follow_every_unmasked_task() -> None:
    """``tree``: edges from the first task only; ``tree_all``: also where the second task steps;
    a masked task (defined on some rows only) is not used."""
    n = 400
    age = np.linspace(18, 80, n)
    table = pa.table(
        {
            "age": age,
            "income": (age >= 60).astype(int),
            "young": (age < 25).astype(int),
            "liked": (age < 40).astype(int),
        }
    )
    tasks = [{"name": "income"}, {"name": "young"}, {"name": "liked", "mask_column": "young"}]
    data = DataConfig.model_validate(
        {
            "path": "x.csv",
            "split": {"kind": "random"},
            "tasks": tasks,
            "features": [{"kind": "numerical", "name": "age"}],
        }
    )

    def edges(method: str) -> np.ndarray:
        pre = Preprocessor.for_data(data, ple_bins=3, ple_method=method).fit(table)
        return np.asarray(pre.numeric["age"].ple_edges)

    z = apply_numeric(age, fit_numeric(age, data.features[0]))[0]  # edges live on standardised values
    young_step = (z[age < 25].max() + z[age >= 25].min()) / 2
    liked_step = (z[age < 40].max() + z[age >= 40].min()) / 2
    assert not np.isclose(edges("tree"), young_step).any()
    assert np.isclose(edges("tree_all"), young_step).any()
    assert not np.isclose(edges("tree_all"), liked_step).any()


def test_numeric_transforms_hand_values_and_infinities() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, np.nan, np.inf, -np.inf])
    from ranker.config.schema import NumericalFeature as NF

    cdf = fit_numeric(x[:4], NF(kind="numerical", name="x", transform="cdf"))
    values, missing = apply_numeric(x, cdf)
    assert values[:4] == pytest.approx([0.0 - 0.5, 1 / 3 - 0.5, 2 / 3 - 0.5, 0.5])  # interpolated sketch
    assert values[4] == 0.0 and missing.tolist() == [0, 0, 0, 0, 1, 0, 0]
    assert values[5] == 0.5 and values[6] == -0.5
    sig = fit_numeric(x[:4], NF(kind="numerical", name="x", transform="sigmoid"))
    v, _ = apply_numeric(np.array([2.5, np.inf]), sig)
    assert v[0] == pytest.approx(0.0) and v[1] == pytest.approx(0.5)  # median → σ = 0.5, centred
    bins = fit_numeric(np.arange(100.0), NF(kind="numerical", name="x", transform="bins", n_bins=4))
    ids, _ = apply_numeric(np.array([0.0, 30.0, 99.0, np.nan]), bins)
    assert ids.tolist() == [3, 4, 6, 2] and bins.n_bin_ids == 7
    state = NumericState.from_state(bins.to_state())
    assert state == bins


@pytest.mark.parametrize(
    "categorical",
    [
        {"kind": "embedding", "dim": 8},
        {"kind": "hashing", "dim": 8, "memory": 0.25},
        {"kind": "unified", "dim": 8, "probes": 2, "memory": 0.25},
        {"kind": "unified", "dim": 8, "probes": 1, "per_feature_probes": {"item": 4}},
    ],
)
@pytest.mark.parametrize(
    "numerical",
    [
        {"kind": "scalar"},
        {"kind": "piecewise_linear", "n_bins": 8},
        {"kind": "piecewise_linear", "n_bins": 8, "embed": True, "dim": 4},
        {"kind": "piecewise_linear", "n_bins": 4, "bins": "tree"},
        {"kind": "piecewise_linear", "n_bins": 4, "bins": "tree_all"},
        {"kind": "periodic", "dim": 4},
        {"kind": "linear", "dim": 4},
    ],
)
def test_every_encoder_combination_trains(categorical: dict, numerical: dict) -> None:
    model_cfg = ModelConfig.model_validate(
        {"encoders": {"categorical": categorical, "numerical": numerical}, "backbone": {"hidden": [8]}}
    )
    n_bins, method = ple_settings(model_cfg)
    pre = Preprocessor.for_data(_data_cfg(), ids=categorical_ids(model_cfg), ple_bins=n_bins, ple_method=method).fit(
        _table()
    )
    data = TensorData.from_encoded(pre.transform(_table(40, 2)))
    model = build_model(model_cfg, pre.layout())
    batch = next(data.batches(40))
    logits = model(batch)
    assert logits.shape == (40, 1) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    again = Preprocessor.from_state(pre.state_dict()).transform(_table(40, 2)).arrays()
    for key, value in pre.transform(_table(40, 2)).arrays().items():
        assert np.array_equal(value, again[key], equal_nan=True), key


def test_memory_fraction_sets_the_table_sizes() -> None:
    pre = Preprocessor.for_data(_data_cfg(), ids="hash").fit(_table())
    layout = pre.layout()
    plain = build_model(ModelConfig.model_validate({"encoders": {"categorical": {"dim": 8}}}), layout)
    plain_rows = sum(t.weight.shape[0] for t in plain.embeddings.tables.values())
    ue = build_model(
        ModelConfig.model_validate(
            {"encoders": {"categorical": {"kind": "unified", "dim": 8, "probes": 2, "memory": 0.25}}}
        ),
        layout,
    )
    ue_params = ue.embeddings.table.weight.numel()
    assert ue_params == math.ceil(0.25 * plain_rows * 2) * 4  # rows of width dim/k = 4
    assert abs(ue_params - 0.25 * plain_rows * 8) <= 4


def test_numerical_transform_default_applies_to_every_numerical_feature(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.csv as pacsv

    from ranker.ranking.run import resolve_data

    pacsv.write_csv(_table().drop_columns(["hist", "tags"]), tmp_path / "x.csv")
    raw = _data_cfg().model_dump()
    raw["features"] = [f for f in raw["features"] if f["kind"] in ("categorical", "numerical")]
    data = DataConfig.model_validate({**raw, "path": str(tmp_path / "x.csv"), "numerical_transform": "cdf"})
    resolved, _ = resolve_data(data)
    assert [f.transform for f in resolved.features if f.kind == "numerical"] == ["cdf", "cdf"]


def test_fused_unified_lookup_equals_feature_by_feature_lookup() -> None:
    model_cfg = ModelConfig.model_validate(
        {
            "encoders": {
                "categorical": {
                    "kind": "unified",
                    "dim": 8,
                    "probes": 2,
                    "per_feature_probes": {"item": 4},
                    "memory": 0.5,
                }
            }
        }
    )
    pre = Preprocessor.for_data(_data_cfg(), ids="hash").fit(_table())
    data = TensorData.from_encoded(pre.transform(_table(32, 3)))
    model = build_model(model_cfg, pre.layout())
    enc = model.embeddings
    batch = next(data.batches(32))
    fused = enc(model.inputs.ids(batch), model.inputs.bags(batch))
    for i, (name, owner) in enumerate(enc.categorical.items()):
        assert torch.equal(fused[i], enc.lookup(owner, batch[f"cat/{name}"])), name
    assert [f.shape[1] for f in fused] == enc.field_dims()


def test_extra_features_append_a_numerical_column_read_again_as_categorical(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.csv as pacsv

    from ranker.ranking.run import resolve_data

    table = _table().drop_columns(["hist", "tags"])
    pacsv.write_csv(table, tmp_path / "x.csv")
    raw = _data_cfg().model_dump()
    raw["features"] = [f for f in raw["features"] if f["kind"] in ("categorical", "numerical")]
    extra = [{"kind": "categorical", "name": "age_id", "column": "age"}]
    data = DataConfig.model_validate({**raw, "path": str(tmp_path / "x.csv"), "extra_features": extra})
    resolved, tables = resolve_data(data)
    assert [f.name for f in resolved.features] == ["user", "item", "price", "age", "age_id"]
    assert resolved.extra_features == []
    pre = Preprocessor.for_data(resolved).fit(tables["train"])
    ids = pre.transform(tables["train"]).cat["age_id"]
    ages = tables["train"].column("age").to_numpy()
    # one id per distinct age, the same age always the same id (the numerical column is untouched)
    assert len(set(ids.tolist())) == len(set(ages.tolist()))
    for a in set(ages.tolist()):
        assert len(set(ids[ages == a].tolist())) == 1
    assert pre.layout().numerical == ["price"] and {"age", "age_id"} <= set(pre.layout().categorical)


def test_extra_features_may_not_repeat_a_feature_name() -> None:
    raw = _data_cfg().model_dump()
    with pytest.raises(ValueError, match=r"duplicate feature names \(features \+ extra_features\): \['age'\]"):
        DataConfig.model_validate({**raw, "extra_features": [{"kind": "categorical", "name": "age"}]})
