"""`ranker bundle`: a verified, self-contained directory; tampered files and runs that do not fit
are refused by name; the two-stage recommender on a loaded bundle."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from serving_runs import tiny_runs

from ranker.cli import main
from ranker.errors import ConfigError, DataError
from ranker.run_manifest import seal_run
from ranker.serving import bundle as bundle_module
from ranker.serving.bundle import BundleError, load_bundle, verify_bundle, write_bundle
from ranker.serving.recommender import Query, Recommender, RequestError
from ranker.serving.store import Event, open_store


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_runs(tmp_path_factory.getbasetemp() / "serving-runs")


@pytest.fixture(scope="module")
def bundle(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "v1"
    assert (
        main(
            [
                "bundle",
                "--retrieval",
                str(runs["retrieval"]),
                "--ranker",
                str(runs["ranker"]),
                "--out",
                str(out),
                "--index",
                "hnsw",
            ]
        )
        == 0
    )
    return out


def test_bundle_round_trip_needs_nothing_outside_it(bundle: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(bundle, moved)  # no path outside the directory is needed
    manifest = verify_bundle(moved)
    assert {"manifest.json", *manifest["files"]} == {
        p.relative_to(moved).as_posix() for p in moved.rglob("*") if p.is_file()
    }
    assert {
        "retrieval/model.safetensors",
        "ranker/model.safetensors",
        "ranker/preprocessor.json",
        "catalogue.parquet",
        "users.parquet",
        "features.json",
        "index.faiss",
    } <= set(manifest["files"])
    b = load_bundle(moved)
    assert b.version == manifest["version"] and b.ranking is not None
    roles = json.loads((moved / "features.json").read_text())["columns"]
    assert (roles["country"]["role"], roles["category"]["role"], roles["price"]["role"]) == ("user", "item", "item")
    catalogue = pq.read_table(moved / "catalogue.parquet")
    assert catalogue.column_names[:2] == ["item", "popularity"] and catalogue.num_rows == manifest["items"]


def test_recommend_two_stages_on_raw_ids(bundle: Path, tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'e.db'}")
    rec = Recommender(load_bundle(bundle), store)
    store.append(
        [Event("u01", "sku-001", "2", 1.0), Event("u01", "sku-004", "3", 2.0), Event("u01", "not-an-item", None, 3.0)]
    )
    out = rec.recommend(Query(user="u01", now=10.0), k=5, n_candidates=20, exclude=["sku-007"])
    items = [r["item"] for r in out["items"]]
    assert len(items) == 5 and out["fallback"] is None and out["unknown_items"] == ["not-an-item"]
    assert not {"sku-001", "sku-004", "sku-007"} & set(items)  # history and `exclude` never return
    assert set(out["items"][0]["probabilities"]) == {"click", "buy"}
    scores = [r["score"] for r in out["items"]]
    assert scores == sorted(scores, reverse=True)
    again = rec.recommend(Query(user="u01", now=10.0), k=5, n_candidates=20, exclude=[], exclude_history=False)
    assert len(again["items"]) == 5
    new = rec.recommend(Query(user="stranger"), k=3, n_candidates=10, exclude=[])
    assert new["fallback"] == "popularity" and len(new["items"]) == 3
    with pytest.raises(RequestError, match="^k: must be at most the catalogue size"):
        rec.recommend(Query(user="u01"), k=10_000, n_candidates=10, exclude=[])


def test_retrieval_only_bundle(runs: dict[str, Path], tmp_path: Path) -> None:
    write_bundle(runs["retrieval"], tmp_path / "r", index="exact")
    b = load_bundle(tmp_path / "r")
    assert b.ranking is None and b.manifest["search"] == "exact" and not (tmp_path / "r" / "index.faiss").exists()
    rec = Recommender(b)
    out = rec.recommend(Query(history=[Event("", "sku-003", None, 1.0)]), k=4, n_candidates=4, exclude=[])
    assert len(out["items"]) == 4 and out["items"][0]["probabilities"] == {}
    assert [r["item"] for r in rec.similar("sku-003", 3)["items"]] != []


@pytest.mark.parametrize("victim", ["ranker/model.safetensors", "catalogue.parquet", "retrieval/config.yaml"])
def test_a_changed_or_missing_file_is_refused_by_name(
    bundle: Path, tmp_path: Path, victim: str, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    with (copy / victim).open("r+b") as f:
        f.seek(10)
        byte = f.read(1)
        f.seek(10)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(BundleError, match=f"{victim}: sha256 differs"):
        load_bundle(copy)
    assert main(["serve", str(copy), "--port", "1"]) == 2  # refused before any worker starts
    assert victim in capsys.readouterr().err
    (copy / victim).unlink()
    with pytest.raises(BundleError, match=f"{victim}: listed in the manifest but missing"):
        load_bundle(copy)


def test_runs_on_other_item_ids_are_refused_naming_the_files(runs: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other-retrieval"
    shutil.copytree(runs["retrieval"], other)
    items = pq.read_table(other / "items.parquet").column("item").to_pylist()
    pq.write_table(pa.table({"item": [f"other-{i}" for i in items]}), other / "items.parquet")
    with pytest.raises(DataError, match=r"items\.parquet: .*manifest\.json"):  # edited after training
        write_bundle(other, tmp_path / "b", ranker_run=runs["ranker"])
    seal_run(other, "retrieval")  # as if it had been trained on these ids
    with pytest.raises(ConfigError, match=r"preprocessor\.json: only 0% .*items\.parquet"):
        write_bundle(other, tmp_path / "b", ranker_run=runs["ranker"])
    pq.write_table(pa.table({"item": list(range(len(items)))}), other / "items.parquet")
    seal_run(other, "retrieval")
    with pytest.raises(ConfigError, match=r"preprocessor\.json: the ranker's item ids are str .* int ids"):
        write_bundle(other, tmp_path / "b", ranker_run=runs["ranker"])
    assert not (tmp_path / "b").exists()  # nothing half-written


def test_bundle_options_are_checked(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--role nope=user: not an input column"):
        write_bundle(runs["retrieval"], tmp_path / "b", ranker_run=runs["ranker"], roles={"nope": "user"})
    write_bundle(runs["retrieval"], tmp_path / "b", ranker_run=runs["ranker"], roles={"hour": "user"})
    cols = json.loads((tmp_path / "b" / "features.json").read_text())["columns"]
    assert cols["hour"]["role"] == "user" and cols["hour"]["forced"]
    with pytest.raises(ConfigError, match="exists"):
        write_bundle(runs["retrieval"], tmp_path / "b")
    with pytest.raises(ConfigError, match="a ranking run; the retrieval stage needs a retrieval run"):
        write_bundle(runs["ranker"], tmp_path / "c")


def test_hstu_retrieval_reads_event_times_and_the_request_time(runs: dict[str, Path], tmp_path: Path) -> None:
    import contextlib
    import io

    import yaml
    from serving_runs import RETRIEVAL

    cfg = {
        **RETRIEVAL,
        "name": "tiny-hstu",
        "data": {**RETRIEVAL["data"], "path": str(runs["events"])},
        "model": {"kind": "hstu", "dim": 8, "num_layers": 1, "linear_dim": 4, "attention_dim": 4},
        "train": {"epochs": 1, "batch_size": 32, "progress": False},
    }
    (tmp_path / "hstu.yaml").write_text(yaml.safe_dump(cfg))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(tmp_path / "hstu.yaml"), "--out", str(tmp_path / "hstu")]) == 0
    write_bundle(tmp_path / "hstu", tmp_path / "b", ranker_run=runs["ranker"])
    rec = Recommender(load_bundle(tmp_path / "b"))
    history = [Event("u02", "sku-002", "1", 1_700_000_000.0), Event("u02", "sku-005", "2", 1_700_003_600.0)]
    soon = rec.recommend(Query(user="u02", history=history, now=1_700_003_700.0), k=40 - 2, n_candidates=40, exclude=[])
    late = rec.recommend(Query(user="u02", history=history, now=1_790_000_000.0), k=40 - 2, n_candidates=40, exclude=[])
    assert len(soon["items"]) == 38 and {r["item"] for r in soon["items"]} == {r["item"] for r in late["items"]}
    assert [r["retrieval_score"] for r in soon["items"]] != [r["retrieval_score"] for r in late["items"]]


def test_batch_recommend_and_predict(
    runs: dict[str, Path], bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 'e.db'}"
    assert (
        main(
            [
                "events",
                "load",
                store,
                str(runs["events"]),
                "--user-column",
                "user",
                "--item-column",
                "item",
                "--action-column",
                "rating",
                "--time-column",
                "ts",
            ]
        )
        == 0
    )
    (tmp_path / "users.txt").write_text("u01\nu02\nnobody\n")
    assert (
        main(
            [
                "recommend",
                str(bundle),
                str(tmp_path / "users.txt"),
                "--store",
                store,
                "--k",
                "4",
                "--out",
                str(tmp_path / "recs.parquet"),
            ]
        )
        == 0
    )
    recs = pq.read_table(tmp_path / "recs.parquet").to_pydict()
    assert recs["user"] == ["u01"] * 4 + ["u02"] * 4 + ["nobody"] * 4 and recs["rank"][:4] == [1, 2, 3, 4]
    assert recs["fallback"][-1] == "popularity" and recs["fallback"][0] is None and set(recs) >= {"click", "buy"}
    rows = runs["ranker"].parent / "rows.parquet"
    assert main(["predict", str(bundle), str(rows), "--out", str(tmp_path / "s.parquet"), "--chunk", "500"]) == 0
    scored = pq.read_table(tmp_path / "s.parquet")
    assert scored.num_rows == pq.read_metadata(rows).num_rows and scored.column_names == ["score", "click", "buy"]
    assert "rows scored" in capsys.readouterr().out


def test_history_encoded_once_equals_every_row_encoding_it(bundle: Path) -> None:
    import numpy as np
    import torch

    from ranker.data.tensors import TensorData
    from ranker.serving.features import ranker_rows, typed_ids

    rec = Recommender(load_bundle(bundle))
    st = rec.bundle.ranking
    assert st is not None
    history = [Event("u03", f"sku-{i:03d}", str(1 + i % 3), 1_700_000_000.0 + 60 * i) for i in range(12)]
    history.append(Event("u03", "unknown-item", None, 1_700_001_000.0))
    items = ["sku-001", "sku-010", "sku-033", "nope"]
    got = rec.score(Query(user="u03", history=history, context={"hour": 7}, now=1_700_002_000.0), items)
    idx = pa.array([rec.index_of.get(i, 0) - 1 if i in rec.index_of else None for i in items], pa.int64())
    table = ranker_rows(
        user="u03",
        user_key=st.user_key,
        user_row={c: st.users["u03"][c] for c in st.user_columns},
        items=items,
        item_key=st.item_key,
        item_features=st.item_features.take(idx),
        context={"hour": 7},
        context_columns=st.context_columns,
        history=history,
        hist=st.history,
        now=1_700_002_000.0,
        item_type=rec.bundle.retrieval.items.type,
    )
    with torch.inference_mode():
        probs = st.spec.outputs(st.model(TensorData.from_encoded(st.pre.transform(table)).tensors)).numpy()
    want = {i: probs[n] for n, i in enumerate(items)}
    for row in got["items"]:
        np.testing.assert_allclose([row["probabilities"][t] for t in ("click", "buy")], want[row["item"]], rtol=1e-5)
    assert typed_ids(["7", "x"], pa.int64()).to_pylist()[0] == 7 and typed_ids(["7"], pa.string()).to_pylist() == ["7"]


def test_a_consistent_manifest_over_runs_that_do_not_fit_is_refused_at_load(bundle: Path, tmp_path: Path) -> None:
    from ranker.serving import bundle as b

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    pre = copy / "ranker" / "preprocessor.json"
    state = json.loads(pre.read_text())
    state["vocabs"]["item"]["values"] = [f"elsewhere-{v}" for v in state["vocabs"]["item"]["values"]]
    pre.write_text(json.dumps(state))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"] = b._hash_files(copy)  # re-signed: the hashes alone no longer catch it
    manifest["version"] = b._version(manifest["files"])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"ranker/preprocessor\.json: only 0% .*retrieval/items\.parquet"):
        load_bundle(copy)


def test_a_quantised_bundle_serves_int8_linear_layers_close_to_the_float_scores(
    runs: dict[str, Path], bundle: Path, tmp_path: Path
) -> None:
    from torch import nn

    out = tmp_path / "int8"
    args = ["bundle", "--retrieval", str(runs["retrieval"]), "--ranker", str(runs["ranker"]), "--out", str(out)]
    assert main([*args, "--quantize", "int8"]) == 0
    manifest = verify_bundle(out)
    assert "serving.json" in manifest["files"] and manifest["stages"]["ranker"]["quantize"] == "int8"
    assert manifest["version"] != verify_bundle(bundle)["version"]  # other scores, another version
    plain, int8 = Recommender(load_bundle(bundle)), Recommender(load_bundle(out))
    assert int8.bundle.ranking is not None and plain.bundle.ranking is not None
    kinds = {f"{type(m).__module__}.{type(m).__name__}" for m in int8.bundle.ranking.model.modules()}
    assert (
        "torch.ao.nn.quantized.dynamic.modules.linear.Linear" in kinds and "torch.nn.modules.linear.Linear" not in kinds
    )
    assert any(type(m) is nn.Linear for m in plain.bundle.ranking.model.modules())  # the float model is untouched
    history = [Event("u05", f"sku-{i:03d}", "2", 1_700_000_000.0 + 60 * i) for i in range(10)]
    items = [f"sku-{i:03d}" for i in range(0, 40, 3)]
    q = Query(user="u05", history=history, now=1_700_001_000.0)
    a = {r["item"]: r["probabilities"] for r in plain.score(q, items)["items"]}
    b = {r["item"]: r["probabilities"] for r in int8.score(q, items)["items"]}
    diffs = [abs(a[i][t] - b[i][t]) for i in items for t in a[i]]
    assert 0 < max(diffs) < 0.05  # quantised: close, not equal
    with pytest.raises(ConfigError, match="--quantize int8: needs a feature ranker \\(--ranker"):
        write_bundle(runs["retrieval"], tmp_path / "x", quantize="int8")
    # serving.json counts only when the manifest lists it: an added file is ignored
    shutil.copyfile(out / "serving.json", bundle / "serving.json")
    try:
        assert any(type(m) is nn.Linear for m in load_bundle(bundle).ranking.model.modules())  # type: ignore[union-attr]
    finally:
        (bundle / "serving.json").unlink()


def test_index_auto_searches_a_small_catalogue_exactly(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["bundle", "--retrieval", str(runs["retrieval"]), "--out", str(tmp_path / "small")]) == 0
        monkeypatch.setattr(bundle_module, "EXACT_UP_TO", 10)  # the tiny catalogue is now "large"
        assert main(["bundle", "--retrieval", str(runs["retrieval"]), "--out", str(tmp_path / "large")]) == 0
    small, large = verify_bundle(tmp_path / "small"), verify_bundle(tmp_path / "large")
    assert small["search"] == "exact" and "index.faiss" not in small["files"]
    assert large["search"] == "hnsw" and "index.faiss" in large["files"]


def test_several_retrieval_runs_are_served_as_one_ensemble(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    import yaml
    from serving_runs import RETRIEVAL

    from ranker.retrieval.ensemble import RetrieverEnsemble
    from ranker.retrieval.run import load_run

    hstu = {"kind": "hstu", "dim": 8, "num_layers": 1, "linear_dim": 4, "attention_dim": 4, "time_bias": False}
    cfg = {**RETRIEVAL, "name": "tiny-hstu", "model": hstu, "data": {**RETRIEVAL["data"], "path": str(runs["events"])}}
    (tmp_path / "hstu.yaml").write_text(yaml.safe_dump(cfg))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(tmp_path / "hstu.yaml"), "--out", str(tmp_path / "hstu")]) == 0
    members = [str(runs["retrieval"]), str(tmp_path / "hstu")]
    out = tmp_path / "b"
    args = ["bundle", "--retrieval", *members, "--ranker", str(runs["ranker"]), "--out", str(out), "--index", "exact"]
    assert main([*args, "--retrieval-weights", "1"]) == 2
    assert "1 weight(s) for 2 run(s)" in capsys.readouterr().err
    assert main([*args, "--retrieval-weights", "1", "0.5"]) == 0
    b = load_bundle(out)
    assert {"retrieval/model.safetensors", "retrieval-2/model.safetensors"} <= set(b.manifest["files"])
    assert b.manifest["stages"]["retrieval"]["ensemble"]["weights"] == [1.0, 0.5]
    assert isinstance(b.retrieval.model, RetrieverEnsemble)
    (_, first, _), (_, second, _) = load_run(runs["retrieval"]), load_run(tmp_path / "hstu")
    items = torch.tensor([[0] * 17 + [3, 5, 7]])
    with torch.no_grad():
        served = b.retrieval.model.user_vectors(items) @ b.retrieval.item_vectors.T
        expected = first.user_vectors(items) @ first.item_vectors().T
        expected += 0.5 * second.user_vectors(items) @ second.item_vectors().T
    torch.testing.assert_close(served, expected, atol=1e-5, rtol=1e-5)
    rec = Recommender(b, open_store(f"sqlite:///{tmp_path / 'e.db'}"))
    got = rec.recommend(Query(history=[Event("", "sku-003", None, 1.0)]), k=4, n_candidates=10, exclude=[])
    assert len(got["items"]) == 4 and set(got["items"][0]["probabilities"]) == {"click", "buy"}


def test_a_stage1_weight_serves_the_fused_order(runs: dict[str, Path], bundle: Path, tmp_path: Path) -> None:
    """--stage1-weight w: /recommend orders by logit(s) + w · s1, the benchmark's fused list."""
    import numpy as np
    import yaml

    with pytest.raises(ConfigError, match=r"--stage1-weight: .*add up to 2 > 1 with combine: sum"):
        write_bundle(runs["retrieval"], tmp_path / "x", ranker_run=runs["ranker"], stage1_weight=1.0)
    with pytest.raises(ConfigError, match=r"--stage1-weight 1.0: needs --ranker"):
        write_bundle(runs["retrieval"], tmp_path / "x", stage1_weight=1.0)
    ranker = tmp_path / "click-ranker"  # the same model, served on p(click) alone: a probability
    shutil.copytree(runs["ranker"], ranker)
    cfg = yaml.safe_load((ranker / "config.yaml").read_text())
    cfg["serving"] = {**cfg.get("serving", {}), "weights": {"click": 1.0}}
    (ranker / "config.yaml").write_text(yaml.safe_dump(cfg))
    seal_run(ranker, "ranking")
    args = ["bundle", "--retrieval", str(runs["retrieval"]), "--ranker", str(ranker), "--index", "exact"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*args, "--out", str(tmp_path / "plain")]) == 0
        assert main([*args, "--out", str(tmp_path / "fused"), "--stage1-weight", "3"]) == 0
    fused_manifest = verify_bundle(tmp_path / "fused")
    assert fused_manifest["stages"]["ranker"]["stage1_weight"] == 3.0
    assert fused_manifest["version"] != verify_bundle(tmp_path / "plain")["version"]
    plain, fused = Recommender(load_bundle(tmp_path / "plain")), Recommender(load_bundle(tmp_path / "fused"))
    assert fused.bundle.stage1_weight == 3.0 and plain.bundle.stage1_weight is None
    history = [Event("u05", f"sku-{i:03d}", "2", 1_700_000_000.0 + 60 * i) for i in range(10)]
    q = Query(user="u05", history=history, now=1_700_001_000.0)
    a = plain.recommend(q, k=20, n_candidates=20, exclude=[])["items"]
    b = fused.recommend(q, k=20, n_candidates=20, exclude=[])["items"]
    assert {r["item"] for r in a} == {r["item"] for r in b}  # the same candidates, ordered otherwise
    p = np.array([r["probabilities"]["click"] for r in a])
    s1 = np.array([r["retrieval_score"] for r in a])
    expected = np.log(p) - np.log1p(-p) + 3.0 * s1
    want = [a[j]["item"] for j in np.argsort(-expected, kind="stable")]
    assert [r["item"] for r in b] == want and want != [r["item"] for r in a]
    np.testing.assert_allclose([r["score"] for r in b], np.sort(expected)[::-1], rtol=1e-6)
    # the popularity fallback has no stage-1 score to fuse: the ranker's order alone
    stranger = Query(user="stranger")
    assert fused.recommend(stranger, k=5, n_candidates=10, exclude=[]) == plain.recommend(
        stranger, k=5, n_candidates=10, exclude=[]
    ) | {"model_version": fused.version}
