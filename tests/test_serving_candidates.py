"""The request's batch with the catalogue encoded at load: equal to encoding every full row, for
early-fused and target-attention TransAct rankers, candidates inside and outside the catalogue."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from pydantic import TypeAdapter
from serving_runs import RANKER, tiny_runs

from ranker.cli import main
from ranker.config.schema import Feature, NumericalFeature
from ranker.data.tensors import TensorData
from ranker.serving.bundle import load_bundle
from ranker.serving.candidates import item_parts
from ranker.serving.features import ranker_rows
from ranker.serving.generative import GenerativeStage
from ranker.serving.recommender import Query, Recommender, Stage1
from ranker.serving.store import Event, open_store
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


def encode_request(
    rec: Recommender, history: list[Event], items: list[str], **derived: object
) -> dict[str, torch.Tensor]:
    """The serving batch of user u03's request (context hour 7), `derived` inputs passed on."""
    st = rec.bundle.ranking
    assert st is not None and not isinstance(st, GenerativeStage)
    return st.candidates.encode(
        user="u03",
        user_row={c: st.users["u03"][c] for c in st.user_columns},
        items=items,
        rows=np.array([rec.index_of.get(i, 0) - 1 for i in items]),
        context={"hour": 7},
        history=history,
        now=NOW,
        **derived,  # type: ignore[arg-type]
    )


def full_rows(rec: Recommender, user: str, history: list[Event], items: list[str]) -> dict[str, torch.Tensor]:
    """What serving did before the catalogue was encoded at load: every full row encoded."""
    st = rec.bundle.ranking
    assert st is not None and not isinstance(st, GenerativeStage)
    return TensorData.from_encoded(st.pre.transform(full_table(rec, user, history, items))).tensors


def full_table(rec: Recommender, user: str, history: list[Event], items: list[str]) -> pa.Table:
    """The full rows of `items` for `user` (context hour 7), raw."""
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
    return table


@pytest.mark.parametrize("design", ["early", "target"])
def test_the_batch_and_the_scores_equal_encoding_every_full_row(bundles: dict[str, Path], design: str) -> None:
    rec = Recommender(load_bundle(bundles[design]))
    st = rec.bundle.ranking
    assert st is not None
    history, items = request()
    got = encode_request(rec, history, items)
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


# ---------------------------------------------------------------------------- derived inputs


@pytest.fixture(scope="module")
def two_stage_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ranker trained on rows with the two-stage columns (stage1_score, stage1_rank also as
    bins, hist_len), bundled with the tiny retriever: the service computes the three."""
    runs = tiny_runs(tmp_path_factory.getbasetemp() / "serving-runs")
    root = tmp_path_factory.mktemp("two-stage")
    rows = pq.read_table(runs["ranker"].parent / "rows.parquet")
    rng = np.random.default_rng(1)
    rows = rows.append_column("stage1_score", pa.array(rng.normal(size=rows.num_rows)))
    rows = rows.append_column("stage1_rank", pa.array(rng.integers(1, 60, rows.num_rows)))
    rows = rows.append_column("hist_len", pa.compute.list_value_length(rows.column("hist_items")))
    pq.write_table(rows, root / "rows.parquet")
    extra = [
        {"kind": "numerical", "name": "stage1_score"},
        {"kind": "numerical", "name": "stage1_rank", "transform": "log1p"},
        {"kind": "numerical", "name": "rank_bin", "column": "stage1_rank", "transform": "bins", "n_bins": 4},
        {"kind": "numerical", "name": "hist_len", "transform": "log1p"},
    ]
    cfg = {**RANKER, "data": {**RANKER["data"], "path": str(root / "rows.parquet")}}
    cfg["data"]["features"] = [*RANKER["data"]["features"], *extra]  # type: ignore[index]
    (root / "ranker.yaml").write_text(yaml.safe_dump(cfg))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(root / "ranker.yaml"), "--out", str(root / "ranker")]) == 0
        args = ["bundle", "--retrieval", str(runs["retrieval"]), "--ranker", str(root / "ranker")]
        assert main([*args, "--out", str(root / "bundle")]) == 0
    return root / "bundle"


def test_two_stage_columns_get_the_derived_roles_by_default(two_stage_bundle: Path) -> None:
    cols = json.loads((two_stage_bundle / "features.json").read_text())["columns"]
    roles = {c: cols[c]["role"] for c in ("stage1_score", "stage1_rank", "hist_len", "price", "hour")}
    assert roles == {
        "stage1_score": "retrieval_score",
        "stage1_rank": "retrieval_rank",
        "hist_len": "history_length",
        "price": "item",
        "hour": "context",
    }


def test_derived_columns_are_encoded_as_the_full_rows_holding_their_values(two_stage_bundle: Path) -> None:
    rec = Recommender(load_bundle(two_stage_bundle))
    st = rec.bundle.ranking
    assert st is not None and not isinstance(st, GenerativeStage)
    history, items = request()
    score = np.array([0.5, -1.25, np.nan, 3.0, -1.25, np.nan])
    rank = np.array([3.0, 40.0, np.nan, 1.0, 40.0, np.nan])
    retrieval = {"retrieval_score": score, "retrieval_rank": rank}
    got = encode_request(rec, history, items, history_length=123, retrieval=retrieval)
    table = full_table(rec, "u03", history, items)
    table = table.append_column("stage1_score", pa.array(score)).append_column("stage1_rank", pa.array(rank))
    table = table.append_column("hist_len", pa.array([123] * len(items)))
    want = TensorData.from_encoded(st.pre.transform(table)).tensors
    assert set(got) == set(want)
    for key, value in want.items():
        expected = value[:1] if key.startswith("hist/") else value
        torch.testing.assert_close(got[key], expected, atol=0, rtol=0, msg=key)
    names = [f.name for f in st.pre.features if isinstance(f, NumericalFeature) and f.transform != "bins"]
    assert got["num_missing"][:, names.index("stage1_score")].tolist() == [0, 0, 1, 0, 0, 1]  # NaN = missing
    assert got["num"][0, names.index("hist_len")] == got["num"][5, names.index("hist_len")] != 0


def test_stage1_features_are_the_exact_catalogue_scores_and_ranks(two_stage_bundle: Path) -> None:
    """The retrieval score ⟨u, e_j⟩ and rank 1 + #{j' ≠ j, j' not in the history : s_j' ≥ s_j},
    by brute force; an item of the history is ranked among the others without excluding
    itself; an unknown item and a user without known history get NaN."""
    rec = Recommender(load_bundle(two_stage_bundle))
    history, _ = request()
    known, _ = rec._internal([e.item for e in history])
    user = rec._user_vector(history, known, NOW)
    items = ["sku-001", "sku-010", "nope", "sku-033", history[0].item]
    rows = np.array([rec.index_of.get(i, 0) - 1 for i in items])
    got = rec._stage1_features(rows, Stage1(user, known))
    s = (rec.bundle.retrieval.item_vectors[1:] @ user[0]).double().numpy()
    allowed = np.ones(len(s), dtype=bool)
    allowed[np.array(known) - 1] = False
    for j, r in enumerate(rows):
        if r < 0:
            assert np.isnan(got["retrieval_score"][j]) and np.isnan(got["retrieval_rank"][j])
            continue
        others = allowed.copy()
        others[r] = False
        assert got["retrieval_score"][j] == pytest.approx(s[r])
        assert got["retrieval_rank"][j] == 1 + int((s[others] >= s[r]).sum()), items[j]
    empty = rec._stage1_features(rows, Stage1(None, []))
    assert np.isnan(empty["retrieval_score"]).all() and np.isnan(empty["retrieval_rank"]).all()


def test_recommend_feeds_the_ranker_its_candidates_stage1_score_rank_and_history_length(
    two_stage_bundle: Path, tmp_path: Path
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'events.db'}")
    history, _ = request()
    store.append([Event("u03", e.item, e.action, e.time) for e in history])
    rec = Recommender(load_bundle(two_stage_bundle), store)
    st = rec.bundle.ranking
    assert st is not None and not isinstance(st, GenerativeStage)
    seen: dict[str, object] = {}
    encode = st.candidates.encode

    def spy(**kwargs: object) -> dict[str, torch.Tensor]:
        seen.update(kwargs)
        return encode(**kwargs)  # type: ignore[arg-type]

    st.candidates.encode = spy  # type: ignore[method-assign]
    answer = rec.recommend(Query(user="u03", now=NOW), k=5, n_candidates=20, exclude=[])
    assert seen["history_length"] == len(history)  # the store's count
    retrieval = seen["retrieval"]
    assert isinstance(retrieval, dict)
    by_item = dict(zip(seen["items"], retrieval["retrieval_score"], strict=True))  # type: ignore[call-overload]
    for row in answer["items"]:
        assert row["retrieval_score"] == pytest.approx(by_item[row["item"]], rel=1e-5)  # stage 1's own score
    ranks = np.sort(retrieval["retrieval_rank"])
    assert ranks[0] == 1 and len(set(ranks.tolist())) == len(ranks)  # the top candidates, distinct ranks
    store.close()


def test_a_derived_role_only_fills_a_numerical_feature(two_stage_bundle: Path, tmp_path: Path) -> None:
    runs = tiny_runs(two_stage_bundle.parent.parent / "serving-runs")
    err = io.StringIO()
    args = ["bundle", "--retrieval", str(runs["retrieval"]), "--ranker", str(two_stage_bundle.parent / "ranker")]
    with contextlib.redirect_stderr(err):
        assert main([*args, "--out", str(tmp_path / "b"), "--role", "country=retrieval_rank"]) == 2
    assert "--role country=retrieval_rank: the service computes a number; 'country' feeds no numerical feature" in (
        err.getvalue()
    )
