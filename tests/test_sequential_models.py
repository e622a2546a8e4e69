"""SASRec and HSTU: causality, padding invariance, shared item table, config errors."""

from __future__ import annotations

import pytest
import torch

from ranker.config import validate
from ranker.config.retrieval import HSTUModel, RetrievalRunConfig, SASRecModel
from ranker.errors import ConfigError
from ranker.models import HSTU, SASRec, SequentialRetriever

L = 8


def _models() -> list[SequentialRetriever]:
    torch.manual_seed(0)
    return [
        SASRec(SASRecModel(dim=8, num_layers=2, num_heads=2, ff_dim=16), num_items=30, max_len=L),
        HSTU(HSTUModel(dim=8, num_layers=2, num_heads=2, linear_dim=4, attention_dim=4), num_items=30, max_len=L),
        HSTU(
            HSTUModel(dim=8, num_layers=2, linear_dim=4, attention_dim=4, query_time="last", attention="fused"),
            num_items=30,
            max_len=L,
        ),
    ]


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    items = torch.tensor([[0, 0, 5, 9, 2, 7, 7, 11], [3, 4, 5, 6, 7, 8, 9, 10]])
    times = torch.cumsum(torch.tensor([[0, 0, 100, 5, 3000, 1, 1, 90_000]] * 2), 1)
    return items, times, torch.cat([times[:, 1:], times[:, -1:] + 60], 1)


@pytest.mark.parametrize("model", _models(), ids=lambda m: type(m).__name__)
def test_position_i_does_not_see_later_inputs(model: SequentialRetriever) -> None:
    model.eval()
    items, times, qtimes = _inputs()
    base = model.encode(items, times, qtimes)
    for i in range(3, L - 1):
        later_items, later_times, later_q = items.clone(), times.clone(), qtimes.clone()
        later_items[:, i + 1 :] = torch.randint(1, 31, (2, L - i - 1))
        later_times[:, i + 1 :] += 12_345
        later_q[:, i + 1 :] += 777  # query times of later positions only
        out = model.encode(later_items, later_times, later_q)
        torch.testing.assert_close(out[:, : i + 1], base[:, : i + 1])
        assert not torch.allclose(out[:, i + 1 :], base[:, i + 1 :])


@pytest.mark.parametrize("model", _models(), ids=lambda m: type(m).__name__)
def test_outputs_do_not_depend_on_left_padding(model: SequentialRetriever) -> None:
    model.eval()
    items, times, qtimes = _inputs()
    short = model.encode(items[:1, 2:], times[:1, 2:], qtimes[:1, 2:])  # no padding at all
    padded = model.encode(items[:1], times[:1], qtimes[:1])  # two padding columns
    torch.testing.assert_close(padded[:, 2:], short)
    batched = model.encode(items, times, qtimes)  # beside a row of another length
    torch.testing.assert_close(batched[:1, 2:], short)


def test_hstu_uses_the_query_time_and_sasrec_ignores_times() -> None:
    sasrec, hstu, _ = _models()
    items, times, qtimes = _inputs()
    for m in (sasrec, hstu):
        m.eval()
    torch.testing.assert_close(sasrec.encode(items, times, qtimes), sasrec.encode(items))
    later = qtimes.clone()
    later[:, -1] += 10**7
    assert not torch.allclose(hstu.user_vectors(items, times, later), hstu.user_vectors(items, times, qtimes))


def test_output_items_are_the_input_table_l2_normalised() -> None:
    model = _models()[1]
    vecs = model.item_vectors()
    torch.testing.assert_close(vecs.norm(dim=1)[1:], torch.ones(30))
    torch.testing.assert_close(vecs[5] * model.item_embedding.weight[5].norm(), model.item_embedding.weight[5])
    items, times, qtimes = _inputs()
    torch.testing.assert_close(model.eval().user_vectors(items, times, qtimes).norm(dim=1), torch.ones(2))


def test_hstu_with_time_bias_refuses_inputs_without_times() -> None:
    model = _models()[1]
    with pytest.raises(ValueError, match="time_bias"):
        model.encode(_inputs()[0])


def test_config_errors_name_the_key() -> None:
    raw = {"kind": "retrieval", "data": {"dataset": "r-ml100k"}, "model": {"kind": "hstu", "num_layer": 3}}
    with pytest.raises(ConfigError, match=r"model\.num_layer: unknown key; allowed: .*num_layers"):
        validate(raw, root=RetrievalRunConfig)
    raw["model"] = {"kind": "gru"}
    with pytest.raises(ConfigError, match="unknown kind 'gru'"):
        validate(raw, root=RetrievalRunConfig)
    raw["model"] = {"kind": "sasrec"}
    raw["loss"] = {"kind": "sampled_softmax", "num_negatives": 0}
    with pytest.raises(ConfigError, match="loss.num_negatives"):
        validate(raw, root=RetrievalRunConfig)
