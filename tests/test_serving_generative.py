"""A generative (HSTU) ranker as a bundle's stage 2: bundled and refused like the feature ranker,
served through the app on raw ids, and scoring exactly what the run's own evaluation scores."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from serving_runs import tiny_generative, tiny_runs

from ranker.cli import main
from ranker.errors import ConfigError
from ranker.generative.batches import user_windows
from ranker.generative.evaluate import predict_split
from ranker.generative.run import SPLIT_IDS, load_events, load_run
from ranker.run_manifest import seal_run
from ranker.serving.app import create_app
from ranker.serving.bundle import BundleError, load_bundle, write_bundle
from ranker.serving.generative import GenerativeStage
from ranker.serving.recommender import Query, Recommender
from ranker.serving.store import Event


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.getbasetemp() / "serving-runs"
    return {**tiny_runs(root), "generative": tiny_generative(root)}


@pytest.fixture(scope="module")
def bundle(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen-bundles") / "v1"
    args = ["bundle", "--retrieval", str(runs["retrieval"]), "--ranker", str(runs["generative"]), "--out", str(out)]
    assert main(args) == 0
    return out


@pytest.fixture()
def client(bundle: Path, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(bundle, f"sqlite:///{tmp_path / 'events.db'}")) as c:
        yield c


def test_bundle_holds_the_generative_run_and_loads_it(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["stages"]["ranker"]["kind"] == "generative"
    assert {
        "generative/model.safetensors",
        "generative/model_shape.json",
        "generative/items.parquet",
        "generative/actions.parquet",
        "static.parquet",
        "generative.json",
    } <= set(manifest["files"])
    st = load_bundle(bundle).ranking
    assert isinstance(st, GenerativeStage) and st.spec.names == ("click", "buy")
    assert st.action_ids == {"buy": 1, "cart": 2, "view": 3} and st.unknown_action == 4  # "wishlist": A + 1
    assert st.max_history == 31 and len(st.static) == 60 and st.static["u01"] != st.unseen_static


def test_a_stage_straight_from_the_run_is_the_bundles_stage(runs: dict[str, Path], bundle: Path) -> None:
    from ranker.serving.generative import stage_of_run

    served, direct = load_bundle(bundle).ranking, stage_of_run(runs["generative"])
    assert isinstance(served, GenerativeStage)
    for name in ("item_ids", "action_ids", "unknown_action", "static", "unseen_static"):
        assert getattr(direct, name) == getattr(served, name), name
    events = [Event("u01", "sku-003", "view", 1_000.0), Event("u01", "sku-007", "buy", 1_010.0)]
    a = direct.score("u01", events, ["sku-001", "sku-002", "nope"], 1_020.0)
    b = served.score("u01", events, ["sku-001", "sku-002", "nope"], 1_020.0)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_recommend_and_score_through_the_app(client: TestClient) -> None:
    t = 1_700_000_000
    events = [
        {"user": "g1", "item": "sku-002", "action": "view", "time": t},
        {"user": "g1", "item": "sku-005", "action": "buy", "time": t + 60},
        {"user": "g1", "item": "mystery", "action": "cart", "time": t + 120},
    ]
    assert client.post("/events", json={"events": events}).json() == {"accepted": 3, "unknown_items": ["mystery"]}
    out = client.post("/recommend", json={"user": "g1", "k": 5, "n_candidates": 20, "time": t + 600}).json()
    assert out["fallback"] is None and out["history_length"] == 3 and out["unknown_items"] == ["mystery"]
    rows = out["items"]
    assert len(rows) == 5 and all(r["item"].startswith("sku-") for r in rows)  # raw catalogue ids
    assert not {"sku-002", "sku-005"} & {r["item"] for r in rows}
    for r in rows:
        assert set(r["probabilities"]) == {"click", "buy"} and all(0 <= p <= 1 for p in r["probabilities"].values())
        assert r["score"] == pytest.approx(sum(r["probabilities"].values()), abs=1e-6)  # serving: Σ_t p_t
        assert r["retrieval_score"] is not None
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    s = client.post("/score", json={"user": "g1", "items": ["sku-001", "sku-009", "nope"], "time": t + 600}).json()
    assert {r["item"] for r in s["items"]} == {"sku-001", "sku-009", "nope"} and s["unknown_items"] == ["nope"]
    assert all(0 <= p <= 1 for r in s["items"] for p in r["probabilities"].values())
    cold = client.post("/recommend", json={"user": "nobody", "k": 3}).json()
    assert cold["fallback"] == "popularity" and len(cold["items"]) == 3 and cold["items"][0]["probabilities"]
    h = client.get("/health").json()
    assert h["ranker"] and h["ranker_kind"] == "generative"


def test_served_scores_equal_the_runs_evaluation(runs: dict[str, Path], client: TestClient) -> None:
    """Every test row of 5 users and of 3 with an action unseen in training, scored by /score with the user's earlier events as the history
    at the event's time, equals the run's evaluation path (windows → predict_split)."""
    cfg, model = load_run(runs["generative"])
    log = load_events(cfg)
    assert log.vocab is not None
    split = SPLIT_IDS["test"]
    probs = predict_split(model, log, split, user_windows(log, split, cfg.data.max_events), 10**7, 8)
    events = np.flatnonzero(log.split == split)
    k = log.candidates.shape[1]
    items, users = log.vocab["items"].to_pylist(), log.vocab["users"].to_pylist()
    actions = log.vocab["actions"].to_pylist()
    unseen = [int(log.user[e]) for e in events if log.action[e] > len(actions)]  # "wishlist" events
    later = [u for u in dict.fromkeys(unseen) if (log.user[events] == u).sum() > 1][:3]
    chosen = [e for e in events if int(log.user[e]) <= 5 or int(log.user[e]) in later]
    assert len(chosen) >= 8 and later
    unseen_in_history = 0
    for e in chosen:
        past = np.flatnonzero(log.user == log.user[e])
        past = past[past < e]  # the user's earlier events in the log's order (each ≤ 31 here)
        history = [
            {
                "item": items[log.item[p] - 1],
                "action": actions[log.action[p] - 1] if log.action[p] <= len(actions) else "wishlist",
                "time": float(log.time[p]),
            }
            for p in past
        ]
        unseen_in_history += sum(h["action"] == "wishlist" for h in history)
        cands = [items[c - 1] for c in log.candidates[e]]
        body = {"user": users[log.user[e] - 1], "history": history, "items": cands, "time": float(log.time[e])}
        got = {r["item"]: r for r in client.post("/score", json=body).json()["items"]}
        row = (e - events[0]) * k
        for slot, item in enumerate(cands):
            want = probs[row + slot]
            served = got[item]
            np.testing.assert_allclose([served["probabilities"][t] for t in ("click", "buy")], want, atol=1e-5, rtol=0)
            assert served["score"] == pytest.approx(float(want.sum()), abs=1e-5)
    assert unseen_in_history > 0  # an action unseen in training was on the path (id A + 1 on both sides)


def test_unknown_actions_and_items_do_not_fail(bundle: Path) -> None:
    """An action the run does not know, or none, is the run's "unseen" action id (A + 1 here);
    an unknown item is the padding item. Neither fails; a known action changes the scores."""
    rec = Recommender(load_bundle(bundle))
    st = rec.bundle.ranking
    assert isinstance(st, GenerativeStage)
    t = 1_700_000_000.0

    def scores(action: str | None, item: str = "sku-003") -> list[float]:
        h = [Event("u02", "sku-001", "view", t), Event("u02", item, action, t + 60)]
        out = rec.score(Query(user="u02", history=h, now=t + 3600), ["sku-004", "sku-007", "sku-010"])
        return [r["score"] for r in sorted(out["items"], key=lambda r: r["item"])]

    never = scores("never-seen-action")
    assert never == scores(None) == scores("wishlist")  # all three: id A + 1
    assert never != scores("buy")
    assert st.action_id("never-seen-action") == 4 and st.action_id("view") == 3
    odd = scores("view", item="not-in-the-catalogue")
    assert len(odd) == 3 and all(np.isfinite(odd))
    # a run without unseen actions in its data has no A + 1: unknown actions take the padding id 0
    st.unknown_action = 0
    assert st.action_id("never-seen-action") == 0 and np.isfinite(scores("never-seen-action")).all()


def test_generative_runs_that_do_not_fit_are_refused_naming_both_files(runs: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "gen"
    shutil.copytree(runs["generative"], other)
    ids = pq.read_table(other / "items.parquet").column("item").to_pylist()
    pq.write_table(pa.table({"item": [f"else-{i}" for i in ids]}), other / "items.parquet")
    seal_run(other, "generative")  # a run that verifies, but over other items
    with pytest.raises(ConfigError, match=r"gen/items\.parquet: only 0% .*retrieval/items\.parquet"):
        write_bundle(runs["retrieval"], tmp_path / "b", ranker_run=other)
    pq.write_table(pa.table({"item": list(range(len(ids)))}), other / "items.parquet")
    seal_run(other, "generative")
    with pytest.raises(ConfigError, match=r"gen/items\.parquet: the ranker's item ids are int .* str ids"):
        write_bundle(runs["retrieval"], tmp_path / "b", ranker_run=other)
    (other / "model_shape.json").unlink()
    seal_run(other, "generative")
    with pytest.raises(ConfigError, match="no model_shape.json"):
        write_bundle(runs["retrieval"], tmp_path / "b", ranker_run=other)
    with pytest.raises(ConfigError, match="--role: only for a feature ranker"):
        write_bundle(runs["retrieval"], tmp_path / "b", ranker_run=runs["generative"], roles={"x": "user"})
    assert not (tmp_path / "b").exists()


def test_a_resigned_bundle_over_other_items_is_refused_at_load(bundle: Path, tmp_path: Path) -> None:
    from ranker.serving import bundle as b

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    ids = pq.read_table(copy / "generative" / "items.parquet").column("item").to_pylist()
    pq.write_table(pa.table({"item": [f"else-{i}" for i in ids]}), copy / "generative" / "items.parquet")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"] = b._hash_files(copy)
    manifest["version"] = b._version(manifest["files"])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"generative/items\.parquet: only 0% .*retrieval/items\.parquet"):
        load_bundle(copy)


def test_batch_commands_with_a_generative_bundle(
    runs: dict[str, Path], bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "users.txt").write_text("u01\nnobody\n")
    store = f"sqlite:///{tmp_path / 'e.db'}"
    out = tmp_path / "recs.parquet"
    assert (
        main(["recommend", str(bundle), str(tmp_path / "users.txt"), "--store", store, "--k", "3", "--out", str(out)])
        == 0
    )
    recs = pq.read_table(out).to_pydict()
    assert recs["user"] == ["u01"] * 3 + ["nobody"] * 3 and {"click", "buy"} <= set(recs)
    rows = runs["ranker"].parent / "rows.parquet"
    assert main(["predict", str(bundle), str(rows), "--out", str(tmp_path / "s.parquet")]) == 2
    assert "a generative ranker as stage 2" in capsys.readouterr().err
