"""The request's batch with the catalogue encoded at load: equal to encoding every full row, for
early-fused and target-attention TransAct rankers, candidates inside and outside the catalogue."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml
from pydantic import TypeAdapter
from serving_runs import RANKER, tiny_runs

from ranker.cli import main
from ranker.config.schema import Feature
from ranker.data.tensors import TensorData
from ranker.serving.bundle import load_bundle
from ranker.serving.candidates import item_parts
from ranker.serving.features import ranker_rows
from ranker.serving.recommender import Query, Recommender
from ranker.serving.store import Event
from ranker.tasks import serving_score

NOW = 1_700_002_000.0


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny runs' bundle (TransAct, early fusion) and one whose ranker uses target attention."""
    runs = tiny_runs(tmp_path_factory.getbasetemp() / "serving-runs")
    root = tmp_path_factory.mktemp("candidates")
    cfg = {**RANKER, "data": {**RANKER["data"], "path": str(runs["ranker"].parent / "rows.parquet")}}
    history = {"kind": "transact", "num_layers": 1, "ff_dim": 16, "early_fusion": False, "target_attention": True}
    cfg["model"] = {**RANKER["model"], "history": history}  # type: ignore[dict-item]
    (root / "target.yaml").write_text(yaml.safe_dump(cfg))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(root / "target.yaml"), "--out", str(root / "target")]) == 0
        out = {}
        for name, ranker in (("early", runs["ranker"]), ("target", root / "target")):
            out[name] = root / f"bundle-{name}"
            args = ["bundle", "--retrieval", str(runs["retrieval"]), "--ranker", str(ranker), "--out", str(out[name])]
            assert main(args) == 0
    return out


def request() -> tuple[list[Event], list[str]]:
    history = [Event("u03", f"sku-{i:03d}", str(1 + i % 3), 1_700_000_000.0 + 60 * i) for i in range(14)]
    history.append(Event("u03", "unknown-item", None, 1_700_001_000.0))
    return history, ["sku-001", "sku-010", "nope", "sku-033", "sku-010", "also-unknown"]


def full_rows(rec: Recommender, user: str, history: list[Event], items: list[str]) -> dict[str, torch.Tensor]:
    """What serving did before the catalogue was encoded at load: every full row encoded."""
    st = rec.bundle.ranking
    assert st is not None
    idx = pa.array([rec.index_of[i] - 1 if i in rec.index_of else None for i in items], pa.int64())
    table = ranker_rows(
        user=user,
        user_key=st.user_key,
        user_row={c: st.users[user][c] for c in st.user_columns},
        items=items,
        item_key=st.item_key,
        item_features=st.item_features.take(idx),
        context={"hour": 7},
        context_columns=st.context_columns,
        history=history,
        hist=st.history,
        now=NOW,
        item_type=rec.bundle.retrieval.items.type,
    )
    return TensorData.from_encoded(st.pre.transform(table)).tensors


@pytest.mark.parametrize("design", ["early", "target"])
def test_the_batch_and_the_scores_equal_encoding_every_full_row(bundles: dict[str, Path], design: str) -> None:
    rec = Recommender(load_bundle(bundles[design]))
    st = rec.bundle.ranking
    assert st is not None
    history, items = request()
    rows = np.array([rec.index_of.get(i, 0) - 1 for i in items])
    got = st.candidates.encode(
        user="u03",
        user_row={c: st.users["u03"][c] for c in st.user_columns},
        items=items,
        rows=rows,
        context={"hour": 7},
        history=history,
        now=NOW,
    )
    want = full_rows(rec, "u03", history, items)
    assert set(got) == set(want)
    for key, value in want.items():
        expected = value[:1] if key.startswith("hist/") else value  # the history: one row
        assert got[key].shape == expected.shape, key
        torch.testing.assert_close(got[key], expected, atol=0, rtol=0, msg=key)
    assert got["cat/item"][2] == got["cat/item"][5] != got["cat/item"][0]  # both unknown: the OOV id
    with torch.inference_mode():
        probs = st.spec.outputs(st.model(want))  # (N, T): the plain forward on the full rows
        scores = serving_score(probs, st.spec, st.cfg.serving.weights, st.cfg.serving.combine).numpy()
    answer = rec.score(Query(user="u03", history=history, context={"hour": 7}, now=NOW), items)["items"]
    assert sorted(r["item"] for r in answer) == sorted(items)
    assert all(a["score"] >= b["score"] for a, b in zip(answer, answer[1:], strict=False))
    for row in answer:
        j = items.index(row["item"])
        np.testing.assert_allclose([row["probabilities"][t] for t in st.spec.names], probs[j].numpy(), rtol=1e-5)
        np.testing.assert_allclose(row["score"], scores[j], rtol=1e-5)


def test_item_parts_name_the_keys_and_numerical_columns_read_from_item_columns() -> None:
    features = TypeAdapter(list[Feature]).validate_python(
        [
            {"kind": "categorical", "name": "user"},
            {"kind": "categorical", "name": "item"},
            {"kind": "categorical", "name": "cat2", "column": "category"},
            {"kind": "numerical", "name": "age"},
            {"kind": "numerical", "name": "price"},
            {"kind": "numerical", "name": "price_bin", "column": "price", "transform": "bins"},
            {"kind": "dense", "name": "vec", "dim": 2},
            {"kind": "history", "name": "h", "item_column": "hist", "item_feature": "item"},
        ]
    )
    keys, num = item_parts(features, {"item", "category", "price", "vec"})
    assert keys == {"cat/item", "cat/cat2", "cat/price_bin", "dense/vec", "num", "num_missing"}
    assert num.tolist() == [False, True]  # age (the user's), price (the item's)
    keys, num = item_parts(features, {"item"})
    assert keys == {"cat/item"} and not num.any()
