"""Two stages: leakage invariants of the stage-2 rows, the declared config trains, final-list
metrics with misses, the paired bootstrap on hand-made examples."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from ranker.config import load_config
from ranker.config.retrieval import HSTUModel
from ranker.errors import DataError
from ranker.models import HSTU
from ranker.retrieval.candidates import Candidates, heldout_candidates, prefix_candidates, prefix_queries
from ranker.retrieval.data import RetrievalEvents, ServingData
from ranker.retrieval.protocol import LeaveOneOut, Sequences, leave_one_out_views
from ranker.twostage import side_info
from ranker.twostage.content import reduce_dim
from ranker.twostage.dataset import stage2_config, stage2_tables, with_side_info, write_tables
from ranker.twostage.evaluate import (
    final_ranks,
    list_metrics,
    paired_bootstrap,
    per_user,
    request_ms,
    stage2_scores,
    time_requests,
)
from ranker.twostage.rows import full_sequences, heldout_rows, rows_table, training_rows
from ranker.twostage.side_info import SideInfo

ITEMS, MAX_LEN, HISTORY = 40, 20, 6
RAW_ITEM = 1000  # raw item id = RAW_ITEM + internal id
RAW_USER = 500


def _world(users: int = 12, seed: int = 0) -> tuple[LeaveOneOut, ServingData, HSTU]:
    rng = np.random.default_rng(seed)
    items, times = [], []
    for _ in range(users):
        n = int(rng.integers(5, 16))
        items.append(list(rng.choice(np.arange(1, ITEMS + 1), size=n, replace=False)))
        times.append(list(1_000_000 + np.cumsum(rng.integers(1, 5000, n))))
    seqs = Sequences.from_lists(items, times)
    events = RetrievalEvents(
        seqs, pa.array(RAW_USER + np.arange(users)), pa.array(RAW_ITEM + np.arange(1, ITEMS + 1)), MAX_LEN
    )
    torch.manual_seed(seed)
    model = HSTU(
        HSTUModel(dim=8, num_layers=1, linear_dim=4, attention_dim=4, dropout=0.0), num_items=ITEMS, max_len=MAX_LEN
    )
    return leave_one_out_views(seqs, ITEMS, MAX_LEN), ServingData.from_events(events), model.eval()


def _side() -> SideInfo:
    users = pa.table({"user_id": RAW_USER + np.arange(12), "gender": ["F", "M"] * 6})
    ids = RAW_ITEM + np.arange(1, ITEMS + 1)
    items = pa.table(
        {
            "item_id": ids,
            "title": [f"movie {i}" for i in ids],
            "genres": [["a"] if i % 2 else ["a", "b"] for i in ids],
            "year": (1990 + ids % 10).astype(float),
        }
    )
    return SideInfo(
        users,
        items,
        [{"kind": "categorical", "name": "gender"}],
        [{"kind": "multi_categorical", "name": "genres"}, {"kind": "numerical", "name": "year"}],
    )


def _train_rows(data: LeaveOneOut, serving: ServingData, model: HSTU) -> tuple[Candidates, pa.Table]:
    user, pos = prefix_queries(data.train.lengths())
    prefix = prefix_candidates(model, data.train, user, pos, 10, max_len=MAX_LEN)
    q = training_rows(model, data, prefix, hard=3, sampled=2, seed=0)
    return prefix, rows_table(q, data, serving, history=HISTORY)


def test_training_rows_hold_only_the_prefix_and_no_heldout_item() -> None:
    data, serving, model = _world()
    prefix, table = _train_rows(data, serving, model)
    full = full_sequences(data)
    rows = table.to_pylist()
    assert len(rows) == len(prefix) * 6
    for r in rows:
        q = r["query"]
        u, p = int(prefix.user[q]), int(prefix.position[q])
        seq = [RAW_ITEM + int(i) for i in full.items[full.offsets[u] : full.offsets[u + 1]]]
        times = full.times[full.offsets[u] : full.offsets[u + 1]]
        assert r["user_id"] == RAW_USER + u and 1 <= p < len(seq) - 2  # a training position
        assert r["hist_items"] == seq[max(0, p - HISTORY) : p]  # nothing from the position on
        assert r["hist_secs"] == [int(times[p] - t) for t in times[max(0, p - HISTORY) : p]]
        assert r["hist_len"] == p
        if r["label"] == 1:
            assert r["item_id"] == seq[p] and r["slot"] == 0
        else:  # a negative is never one of the user's items: no valid/test target, no future item
            assert r["item_id"] not in seq
    heldout = {RAW_ITEM + int(i) for i in np.concatenate([data.valid_target, data.test_target])}
    positives = [r for r in rows if r["label"] == 1]
    assert len(positives) == len(prefix)
    for r in positives:  # positives are training items only (each user rates an item once)
        u = r["user_id"] - RAW_USER
        assert r["item_id"] not in {RAW_ITEM + int(data.valid_target[u]), RAW_ITEM + int(data.test_target[u])}
    assert heldout  # the check above is not vacuous


def test_hard_negatives_come_from_the_prefix_candidates_and_carry_stage1_ranks() -> None:
    data, serving, model = _world()
    user, pos = prefix_queries(data.train.lengths())
    prefix = prefix_candidates(model, data.train, user, pos, 10, max_len=MAX_LEN)
    q = training_rows(model, data, prefix, hard=3, sampled=2, seed=0)
    hard = q.items[:, 1:4]
    assert all(set(h[h > 0]) <= set(c) for h, c in zip(hard, prefix.items, strict=True))
    col = (prefix.items[:, :, None] == hard[:, None, :]).argmax(1) + 1  # their place in the top-10
    assert np.array_equal(q.rank[:, 1:4][hard > 0], col[hard > 0])
    assert np.array_equal(q.rank[:, 0], prefix.target_rank)
    again = training_rows(model, data, prefix, hard=3, sampled=2, seed=0)
    assert np.array_equal(again.items, q.items)  # seeded
    assert not np.array_equal(training_rows(model, data, prefix, hard=3, sampled=2, seed=1).items, q.items)


def test_rank_weighted_hard_negatives_favour_the_top_of_the_list() -> None:
    """hard_alpha α: hard negatives drawn with weight r^−α (Efraimidis–Spirakis keys); 0 = uniform."""
    data, serving, model = _world()
    user, pos = prefix_queries(data.train.lengths())
    prefix = prefix_candidates(model, data.train, user, pos, 10, max_len=MAX_LEN)
    uniform = training_rows(model, data, prefix, hard=1, sampled=0, seed=0)
    assert np.array_equal(
        training_rows(model, data, prefix, hard=1, sampled=0, seed=0, hard_alpha=0.0).items, uniform.items
    )
    places = {}
    for alpha in (0.0, 1.0, 3.0):
        q = training_rows(model, data, prefix, hard=1, sampled=0, seed=0, hard_alpha=alpha)
        hard = q.items[:, 1]
        assert set(hard[hard > 0]) <= set(prefix.items.ravel())
        assert all(h == 0 or h in c for h, c in zip(hard, prefix.items, strict=True))
        col = (prefix.items == hard[:, None]).argmax(1) + 1  # the hard negative's place in the top 10
        places[alpha] = col[hard > 0]
    means = {a: float(v.mean()) for a, v in places.items()}
    assert means[0.0] > means[1.0] + 0.5 > means[3.0] + 1.0, means
    # α = 3: place 1 has weight 1, places 2–10 together ~0.20 of it, so most draws are place 1 or 2
    assert np.mean(places[3.0] <= 2) > 0.75 > np.mean(places[0.0] <= 2)
    with pytest.raises(ValueError, match="hard_alpha >= 0"):
        training_rows(model, data, prefix, hard=1, sampled=0, seed=0, hard_alpha=-1.0)


def test_heldout_rows_are_the_candidates_with_the_protocols_history() -> None:
    data, serving, model = _world()
    for split, inputs in (("valid", data.train), ("test", data.test_input)):
        c = heldout_candidates(model, data, split, 7)
        table = rows_table(heldout_rows(c), data, serving, history=100).to_pylist()
        assert len(table) == len(c) * 7
        for r in table[:: 7 * 3]:
            u = r["user_id"] - RAW_USER
            seq = inputs.items[inputs.offsets[u] : inputs.offsets[u + 1]]
            assert r["hist_items"] == [RAW_ITEM + int(i) for i in seq]  # the whole input
            assert r["stage1_rank"] == r["slot"] + 1
            target = data.valid_target[u] if split == "valid" else data.test_target[u]
            assert r["label"] == int(r["item_id"] == RAW_ITEM + int(target))


def test_side_information_and_content_are_joined_by_raw_id() -> None:
    side = _side()
    table = pa.table({"user_id": pa.array([RAW_USER + 1, 99]), "item_id": pa.array([RAW_ITEM + 2, RAW_ITEM + 3])})
    content = np.arange(ITEMS * 2, dtype=np.float32).reshape(ITEMS, 2)
    out = with_side_info(table, side, content).to_pylist()
    assert out[0]["gender"] == "M" and out[1]["gender"] is None  # unknown user: missing
    assert out[0]["genres"] == ["a", "b"] and out[1]["year"] == 1990 + (RAW_ITEM + 3) % 10
    assert out[0]["title_emb"] == [2.0, 3.0] and out[1]["title_emb"] == [4.0, 5.0]


def test_beauty_side_information_is_each_items_attribute_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """R-Beauty: S3-Rec's item2attributes, joined by the file's integer item ids; no user columns."""
    folder = tmp_path / "amazon-seqrec-s3rec"
    folder.mkdir()
    monkeypatch.setenv("RANKER_DATA_DIR", str(tmp_path))

    def attributes(text: str) -> None:  # our file, declared with its own digest
        (folder / "Beauty_item2attributes.json").write_text(text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        monkeypatch.setattr(
            side_info, "BEAUTY_ATTRIBUTES", dataclasses.replace(side_info.BEAUTY_ATTRIBUTES, sha256=digest)
        )

    attributes('{"2": [7, 1], "10": [3]}')
    side = side_info.beauty()
    assert side.user_features == [] and [f["name"] for f in side.item_features] == ["attributes"]
    out = with_side_info(pa.table({"user_id": pa.array([5, 6]), "item_id": pa.array([10, 4])}), side).to_pylist()
    assert out == [{"user_id": 5, "item_id": 10, "attributes": ["3"]}, {"user_id": 6, "item_id": 4, "attributes": None}]
    attributes('["not", "a", "mapping"]')
    with pytest.raises(DataError, match=r"Beauty_item2attributes.json: expected \{item id: \[attribute ids\]\}"):
        side_info.beauty()


def test_reduce_dim_keeps_the_principal_axes() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)) * np.array([5.0, 3.0, 0.1, 0.1, 0.1, 0.1])
    y = reduce_dim(x, 2)
    assert y.shape == (50, 2)
    np.testing.assert_allclose(y.var(0), np.sort(x.var(0))[::-1][:2], rtol=0.1)
    np.testing.assert_array_equal(reduce_dim(x, 2), y)


def test_declared_config_trains_on_the_files_and_scores_every_row(tmp_path: Path) -> None:
    data, serving, model = _world()
    user, pos = prefix_queries(data.train.lengths())

    def tables_of(prefix: Candidates | None, n: int) -> dict[str, pa.Table]:
        valid, test = (heldout_candidates(model, data, split, n) for split in ("valid", "test"))
        content = np.ones((ITEMS, 3), dtype=np.float32)
        return stage2_tables(
            model,
            data,
            serving,
            _side(),
            prefix=prefix,
            valid=valid,
            test=test,
            hard=3,
            sampled=2,
            seed=0,
            history=HISTORY,
            content=content,
        )

    files = write_tables(
        tmp_path / "data", tables_of(prefix_candidates(model, data.train, user, pos, 10, max_len=MAX_LEN), 8)
    )
    cfg = stage2_config("tiny", files, _side(), times=True, content_dim=3, history=HISTORY, epochs=1)
    cfg["model"]["history"]["max_len"] = 4
    run = load_config(base=cfg)
    from ranker.ranking.run import train_run

    metrics = train_run(run, tmp_path / "run")
    assert metrics["rows"]["valid"] == 12 * 8
    test = pq.read_table(files["test"])
    scores = stage2_scores(tmp_path / "run", test)
    assert scores.shape == (test.num_rows,) and np.isfinite(scores).all()
    timing = request_ms(tmp_path / "run", test, [0, 1, 2], threads=1, warmup=1)
    assert set(timing) == {"mean_ms", "p50_ms", "p99_ms"} and timing["mean_ms"] > 0

    # without prefix candidates: only the held-out tables, here of the top 5, to score with the
    # stage 2 trained on the top 8's rows: the same rows as the top 8's first five slots
    heldout = tables_of(None, 5)
    assert set(heldout) == {"valid", "test"}
    top5 = test.filter(pc.less(test.column("slot"), 5))
    assert heldout["test"].num_rows == 12 * 5 and heldout["test"].equals(top5)
    np.testing.assert_allclose(
        stage2_scores(tmp_path / "run", heldout["test"]), scores[test.column("slot").to_numpy() < 5], rtol=1e-6
    )


def test_a_target_outside_the_n_is_a_miss_in_both_arms() -> None:
    # query 0: target in slot 2 (stage-1 rank 3), stage 2 puts it first; query 1: target not among the 3
    c = Candidates(
        np.array([0, 1]),
        np.array([5, 6]),
        np.array([8, 9]),
        np.zeros(2, np.float32),
        np.array([3, 7]),
        np.array([[4, 5, 8], [1, 2, 3]]),
        np.array([[0.9, 0.5, 0.4], [0.9, 0.8, 0.7]], np.float32),
    )
    two, one = final_ranks(np.array([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]]), c)
    assert two.tolist() == [1, 4] and one.tolist() == [3, 4]
    m = list_metrics(two, n=3)
    assert set(m) == {"MRR"}  # no K ≤ N = 3 among 10 and 50
    assert m["MRR"] == pytest.approx((1 + 1 / 4) / 2)
    m50 = list_metrics(np.array([1, 51]), n=50)
    assert m50["HR@10"] == 0.5 and m50["HR@50"] == 0.5  # rank N + 1 = 51 is a miss at 50


def test_tied_scores_count_against_the_target() -> None:
    c = Candidates(
        np.array([0]),
        np.array([5]),
        np.array([8]),
        np.zeros(1, np.float32),
        np.array([2]),
        np.array([[4, 8, 5]]),
        np.array([[0.9, 0.5, 0.4]], np.float32),
    )
    two, _ = final_ranks(np.array([[0.3, 0.3, 0.3]]), c)
    assert two.tolist() == [3]


def test_paired_bootstrap_on_hand_made_examples() -> None:
    same = paired_bootstrap(np.ones(30), np.zeros(30))
    assert (same["diff"], same["low"], same["high"]) == (1.0, 1.0, 1.0)
    # two users, differences 1 and 0: resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    two = paired_bootstrap(np.array([1.0, 0.0]), np.zeros(2), resamples=4000, seed=3)
    assert two["diff"] == 0.5 and two["low"] == 0.0 and two["high"] == 1.0
    tight = paired_bootstrap(np.array([1.0, 0.0]), np.zeros(2), resamples=4000, seed=3, level=0.4)
    assert tight["low"] == tight["high"] == 0.5  # the middle 40 % is all 0.5
    noisy = np.random.default_rng(0).random(40)
    assert paired_bootstrap(noisy, np.zeros(40), seed=5) == paired_bootstrap(noisy, np.zeros(40), seed=5)
    r = per_user(np.array([1, 3, 11, 60]))
    assert r["HR@10"].tolist() == [1, 1, 0, 0] and r["HR@50"].tolist() == [1, 1, 1, 0]
    assert r["NDCG@10"][1] == pytest.approx(0.5) and r["MRR"][2] == pytest.approx(1 / 11)


def test_generative_stage2_files_train_and_score_the_lists_as_served(tmp_path: Path) -> None:
    """The generative stage 2: the event file is each user's full sequence in order, the
    negatives name (user, position) of the training and held-out queries, a declared
    ``kind: generative`` config trains on them, and the held-out lists are scored through the
    served stage exactly as the model scores the candidates appended to the history."""
    import yaml

    from ranker.config import anchored, load_generative_config
    from ranker.generative.run import load_events, train_generative_run
    from ranker.models.generative import Tokens
    from ranker.nn.interleave import ACTION, ITEM, STATIC
    from ranker.serving.generative import stage_of_run
    from ranker.twostage import generative as gen

    data, serving, model = _world()
    full = full_sequences(data)
    user, pos = prefix_queries(data.train.lengths(), per_user=2, seed=0)
    prefix = prefix_candidates(model, data.train, user, pos, 10, max_len=MAX_LEN)
    train = training_rows(model, data, prefix, hard=3, sampled=1, seed=0)
    held = [heldout_candidates(model, data, s, 8) for s in ("valid", "test")]
    tables = gen.event_tables(data, serving, _side())
    tables["negatives"] = gen.negatives_table(train, held, serving, per_event=4, seed=0)

    ev = tables["events"]
    assert ev.num_rows == len(full.items)
    u3 = ev.filter(pa.compute.equal(ev.column("user"), RAW_USER + 3))
    assert u3.column("item").to_pylist() == (RAW_ITEM + full.items[full.offsets[3] : full.offsets[4]]).tolist()
    assert u3.column("position").to_pylist() == list(range(u3.num_rows))
    neg = tables["negatives"]
    assert neg.num_rows == int((train.items[:, 1:] > 0).sum()) + 2 * 12 * 4
    for row in neg.to_pylist():  # never the item at that position nor one before it
        u, p = row["user"] - RAW_USER, row["position"]
        assert row["item"] - RAW_ITEM not in full.items[full.offsets[u] : full.offsets[u] + p + 1]

    folder = tmp_path / "gen"
    folder.mkdir()
    files = {k: folder / f"{k}.parquet" for k in tables}
    for k, t in tables.items():
        pq.write_table(t, files[k])
    cfg = gen.generative_config("tiny-gen", {k: Path(p.name) for k, p in files.items()}, _side(), per_event=4, epochs=1)
    cfg["model"] |= {"dim": 8, "num_heads": 1, "linear_dim": 4, "attention_dim": 4}
    cfg["data"]["max_events"] = 8
    (folder / "gen.yaml").write_text(yaml.safe_dump(cfg))
    run_cfg = anchored(load_generative_config(folder / "gen.yaml"), folder / "gen.yaml")
    log = load_events(run_cfg)
    assert log.train_target is not None
    assert int(log.train_target[log.split == 0].sum()) == len(np.unique(train.user * 100 + train.position))
    metrics = train_generative_run(run_cfg, tmp_path / "run")
    assert metrics["rows"]["valid"] == 12 * 5  # the validation event and its 4 listed candidates

    stage = stage_of_run(tmp_path / "run")
    c = held[1]
    lists = gen.HeldOutLists(stage, data, serving)
    scores = lists.scores(c)
    assert scores.shape == c.items.shape and np.isfinite(scores[c.items > 0]).all()
    q = 5  # by hand: the last max_events − 1 items before the test position, then the candidates
    u, p = int(c.user[q]), int(c.position[q])
    first = max(0, p - stage.max_history)
    hist = full.items[full.offsets[u] + first : full.offsets[u] + p]
    static = log.static[u + 1].tolist()  # event-file users are sorted raw ids: view row u is id u + 1
    s, m = len(static), len(hist)
    row = lambda v: torch.tensor(v).view(1, -1)  # noqa: E731
    tokens = Tokens(
        row([STATIC] * s + [ITEM, ACTION] * m),
        row(static + [x for it in hist for x in (int(it), 1)]),
        row([-1] * s + [e for e in range(m) for _ in (0, 1)]),
        row([first] * s + [first + e for e in range(m) for _ in (0, 1)]),
        row(list(range(s + 2 * m))),
        torch.zeros(0, dtype=torch.long),
    )
    by_hand = torch.sigmoid(stage.model.score_candidates(tokens, torch.from_numpy(c.items[q]), time=p)[:, 0])
    assert np.allclose(scores[q], by_hand.numpy(), atol=1e-6)
    timing = time_requests(lambda i: lists.score(c, i), [0, 1, 2], threads=1, warmup=1)
    assert set(timing) == {"mean_ms", "p50_ms", "p99_ms"} and timing["mean_ms"] > 0


def test_the_blend_weight_is_picked_on_the_lists_it_is_given() -> None:
    from ranker.twostage.evaluate import blend, pick_blend

    # two queries, target item 7 in slot 1; stage 1 puts it first, stage 2 is right only in the second
    c = Candidates(
        np.array([0, 1]), np.array([3, 4]), np.array([7, 7]), np.zeros(2), np.array([1, 1]),
        np.array([[5, 7, 6], [5, 7, 6]]), np.array([[0.2, 0.9, 0.1], [0.2, 0.9, 0.1]]),
    )  # fmt: skip
    flat = np.full((2, 3), 0.5)  # stage 2 says nothing: ties count against the target, so any weight > 0 wins
    assert pick_blend(flat, c) == 0.5
    right = np.array([[0.1, 0.9, 0.2], [0.1, 0.9, 0.2]])
    assert pick_blend(right, c) == 0.0  # both agree: no weight needed, the first of equals
    wrong = np.array([[0.9, 0.1, 0.5], [0.9, 0.1, 0.5]])  # logits ±2.2: stage 1's 0.7 lead needs weight > 6.3
    assert pick_blend(wrong, c) == 10.0
    b = blend(wrong, c, 10.0)
    assert b[0].argmax() == 1 and np.isclose(b[0, 1] - b[0, 0], -2 * np.log(9) + 10 * 0.7)


def test_cross_fitted_scores_are_out_of_fold_on_validation_and_averaged_logits_on_test() -> None:
    from ranker.twostage.evaluate import cross_fit

    rng = np.random.default_rng(0)
    query = np.repeat(np.arange(6), 3)  # six queries of three rows: even ones trained fold 0, odd ones fold 1
    p0, p1 = rng.uniform(0.05, 0.95, (2, query.size))
    valid = cross_fit([p0, p1], query, held_out=False)
    assert np.array_equal(valid[query % 2 == 0], p1[query % 2 == 0])  # fold 0 saw them: fold 1 scores
    assert np.array_equal(valid[query % 2 == 1], p0[query % 2 == 1])
    test = cross_fit([p0, p1], query, held_out=True)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert np.allclose(logit(test), (logit(p0) + logit(p1)) / 2)
    assert np.all((np.minimum(p0, p1) <= test + 1e-12) & (test <= np.maximum(p0, p1) + 1e-12))
    with pytest.raises(ValueError, match="two folds"):
        cross_fit([p0], query, held_out=True)
