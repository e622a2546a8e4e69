"""Item attributes in the sequence models (`data.item_attributes`): the token matrix, the fused
item table E[j] = V[j] + mean_a A[a], and a run that keeps them through training and serving."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml

from ranker.cli import main
from ranker.config import load_retrieval_config
from ranker.config.retrieval import ItemAttributes, SASRecModel
from ranker.errors import ConfigError, DataError
from ranker.models.sequential import SASRec
from ranker.retrieval.attributes import AttributeTokens, attribute_tokens
from ranker.retrieval.run import load_run
from ranker.twostage.side_info import side_info


def _json(path: Path, mapping: dict[str, list[str]]) -> str:
    path.write_text(json.dumps(mapping))
    return str(path)


def test_tokens_follow_the_catalogue_order_with_sorted_vocabulary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _json(tmp_path / "a.json", {"sku-b": ["red", "shoe", "red"], "sku-a": ["blue"], "gone": ["x"]})
    got = attribute_tokens(ItemAttributes(path=path), pa.array(["sku-a", "sku-b", "sku-c"]))
    # vocabulary: blue 1, red 2, shoe 3 ("x" belongs to no catalogue item, repeated "red" kept once)
    assert got.vocabulary == 3
    assert got.tokens.tolist() == [[0, 0], [1, 0], [2, 3], [0, 0]]
    assert "1 of 3 catalogue items have no attributes" in capsys.readouterr().err
    cut = attribute_tokens(ItemAttributes(path=path, max_per_item=1), pa.array(["sku-a", "sku-b"]))
    assert cut.tokens.tolist() == [[0], [1], [2]]
    assert "max_per_item: 1 items list more than 1" in capsys.readouterr().err


def test_bad_attribute_sources_name_the_file_or_key(tmp_path: Path) -> None:
    ints = pa.array([1, 2, 3])
    with pytest.raises(DataError, match="item ids must be integers"):
        attribute_tokens(ItemAttributes(path=_json(tmp_path / "s.json", {"a": ["x"]})), ints)
    with pytest.raises(DataError, match="none of the catalogue's 3 items"):
        attribute_tokens(ItemAttributes(path=_json(tmp_path / "n.json", {"9": ["x"]})), ints)
    (tmp_path / "l.json").write_text('[["x"]]')
    with pytest.raises(DataError, match=r"l.json: expected a JSON object"):
        attribute_tokens(ItemAttributes(path=str(tmp_path / "l.json")), ints)
    with pytest.raises(ConfigError, match="data.item_attributes.path: .*file not found"):
        attribute_tokens(ItemAttributes(path=str(tmp_path / "nowhere.json")), ints)
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kind": "retrieval",
                "data": {"dataset": "r-beauty", "item_attributes": {"source": "beauty", "path": "a.json"}},
            }
        )
    )
    with pytest.raises(ConfigError, match="data.item_attributes.*exactly one of source"):
        load_retrieval_config(config)


def test_built_in_attribute_sources_cover_their_catalogues() -> None:
    got = attribute_tokens(ItemAttributes(source="beauty"), pa.array(np.arange(1, 12102)))
    # S3-Rec's file: 637 distinct attribute ids, 1 to 6 per item, every item listed
    assert got.vocabulary == 637 and got.tokens.shape == (12102, 6)
    assert (got.tokens[1:] > 0).any(1).all() and not got.tokens[0].any()
    movies = side_info("ml-1m").items
    got = attribute_tokens(ItemAttributes(source="ml-1m"), movies.column("item_id").combine_chunks())
    # movies.dat: 18 genres + 81 distinct years; at most 6 genres + the year per movie
    assert got.vocabulary == 99 and got.tokens.shape == (3884, 7)
    assert ((got.tokens[1:] > 0).sum(1) >= 2).all()  # every movie: a genre and a year


def test_item_table_adds_the_mean_attribute_embedding() -> None:
    tokens = AttributeTokens(np.array([[0, 0], [1, 2], [2, 0], [0, 0]]), vocabulary=2)
    torch.manual_seed(0)
    model = SASRec(SASRecModel(dim=4, num_layers=1, l2_normalize=False), num_items=3, max_len=5, attributes=tokens)
    ids, attrs = model.item_embedding.weight, model.attribute_embedding.weight  # type: ignore[union-attr]
    table = model.item_table()
    assert torch.allclose(table[1], ids[1] + (attrs[1] + attrs[2]) / 2)
    assert torch.allclose(table[2], ids[2] + attrs[2])
    assert torch.equal(table[3], ids[3]) and not table[0].any()  # no attributes; padding stays zero
    assert torch.equal(model.item_vectors(), table)  # the output side is the same table
    model.item_vectors()[2].sum().backward()  # item 2 reaches attribute 2 only
    grad = model.attribute_embedding.weight.grad  # type: ignore[union-attr]
    assert grad is not None and grad[2].abs().sum() > 0 and not grad[1].any()
    # the input side reads the same table: with zero attribute rows, the plain model's states
    model.eval()
    seq = torch.tensor([[0, 1, 2, 3]])
    fused = model.encode(seq)
    plain = SASRec(SASRecModel(dim=4, num_layers=1, l2_normalize=False), num_items=3, max_len=5).eval()
    plain.load_state_dict(model.state_dict(), strict=False)  # everything but the attribute weights
    with torch.no_grad():
        model.attribute_embedding.weight.zero_()  # type: ignore[union-attr]
        assert torch.allclose(model.encode(seq), plain.encode(seq))
        assert not torch.allclose(fused, plain.encode(seq), atol=1e-4)


def test_without_attributes_the_weights_are_the_plain_models() -> None:
    plain = SASRec(SASRecModel(dim=4, num_layers=1), num_items=3, max_len=5)
    assert plain.attribute_embedding is None
    assert not any("attribute" in k for k in plain.state_dict())  # old runs still load
    with pytest.raises(ValueError, match="attribute tokens for 2 items, catalogue 3"):
        SASRec(SASRecModel(dim=4), num_items=3, max_len=5, attributes=AttributeTokens(np.zeros((3, 1), np.int64), 1))


def test_a_run_with_attributes_trains_saves_and_serves_without_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    rows = ["user,item"] + [f"u{u},i{int(rng.integers(0, 30))}" for u in range(20) for _ in range(12)]
    (tmp_path / "events.csv").write_text("\n".join(rows) + "\n")
    _json(tmp_path / "attrs.json", {f"i{k}": [f"brand{k % 3}", f"cat{k % 5}"] for k in range(30)})
    cfg = {
        "kind": "retrieval",
        "data": {
            "path": "events.csv",
            "user_column": "user",
            "item_column": "item",
            "max_len": 8,
            "item_attributes": {"path": "attrs.json"},
        },
        "model": {"kind": "sasrec", "dim": 8, "num_layers": 1, "ff_dim": 8},
        "loss": {"kind": "full_softmax"},
        "train": {"epochs": 2, "batch_size": 8, "progress": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(tmp_path / "c.yaml"), "--out", str(out)]) == 0
    assert json.loads((out / "data.json").read_text())["item_attributes"] == {"vocabulary": 8, "per_item": 2}
    assert main(["evaluate", str(out)]) == 0  # the same weights and tokens as at the end of training
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(
        json.loads((out / "metrics.json").read_text())["test"]
    )
    (tmp_path / "attrs.json").unlink()  # the tokens travel in the weights
    _, model, serving = load_run(out)
    items = serving.items.to_pylist()
    tokens = model.item_attributes  # type: ignore[union-attr]
    k = items.index("i4") + 1
    assert (tokens[k] > 0).sum() == 2  # brand1 and cat4, as given
    shared = items.index("i7") + 1  # brand1, cat2: shares brand1's token with i4
    assert len(set(tokens[k].tolist()) & set(tokens[shared].tolist())) == 1
    assert main(["retrieve", str(out), "--history", "i1,i2", "--k", "3"]) == 0
    assert len([x for x in capsys.readouterr().out.splitlines() if "score" in x]) == 3
