"""TensorData batching: coverage, determinism, sharding, zero-copy slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ranker.data.preprocess import Encoded
from ranker.data.tensors import TensorData


def make(n: int) -> TensorData:
    rows = torch.arange(n)
    return TensorData(
        {
            "row": rows,
            "cat/user": rows * 10,
            "multi/tags": torch.stack([rows, rows + 1000], 1),
            "num": rows.float()[:, None] / 2,
        }
    )


def rows_of(batches: list[dict[str, torch.Tensor]]) -> list[int]:
    return torch.cat([b["row"] for b in batches]).tolist()


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (12, 4), (7, 100), (1, 1)])
def test_every_row_exactly_once_per_epoch(shuffle: bool, n: int, batch_size: int) -> None:
    data = make(n)
    gen = torch.Generator().manual_seed(0)
    batches = list(data.batches(batch_size, shuffle=shuffle, generator=gen))
    got = rows_of(batches)
    assert sorted(got) == list(range(n))
    if not shuffle:
        assert got == list(range(n))
    assert len(batches) == data.num_batches(batch_size) == -(-n // batch_size)
    assert [len(b["row"]) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    for b in batches:  # the columns of a batch stay aligned
        assert torch.equal(b["cat/user"], b["row"] * 10)
        assert torch.equal(b["multi/tags"][:, 1], b["row"] + 1000)
        assert torch.equal(b["num"][:, 0], b["row"].float() / 2)


def test_shuffle_changes_between_epochs_and_seeds() -> None:
    data = make(50)
    gen = torch.Generator().manual_seed(1)
    first = rows_of(list(data.batches(8, shuffle=True, generator=gen)))
    second = rows_of(list(data.batches(8, shuffle=True, generator=gen)))
    assert first != list(range(50))
    assert first != second  # the generator advances: a new order every epoch
    other = rows_of(list(data.batches(8, shuffle=True, generator=torch.Generator().manual_seed(2))))
    assert other != first


def test_same_seed_same_order() -> None:
    data = make(40)
    runs = [rows_of(list(data.batches(6, shuffle=True, generator=torch.Generator().manual_seed(9)))) for _ in range(2)]
    assert runs[0] == runs[1]
    expected = torch.randperm(40, generator=torch.Generator().manual_seed(9)).tolist()
    assert runs[0] == expected


def test_drop_last() -> None:
    data = make(10)
    batches = list(data.batches(4, drop_last=True))
    assert [len(b["row"]) for b in batches] == [4, 4]
    assert rows_of(batches) == list(range(8))


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize(("n", "world"), [(20, 2), (23, 4), (9, 3)])
def test_shards_are_disjoint_and_equal_sized(shuffle: bool, n: int, world: int) -> None:
    data = make(n)
    shards = []
    for rank in range(world):
        gen = torch.Generator().manual_seed(5)  # every rank draws the same permutation
        shards.append(rows_of(list(data.batches(3, shuffle=shuffle, generator=gen, rank=rank, world_size=world))))
    sizes = {len(s) for s in shards}
    assert sizes == {n // world}
    flat = sum(shards, [])
    assert len(set(flat)) == len(flat) == (n // world) * world  # disjoint
    assert set(flat) <= set(range(n))
    expected_batches = data.num_batches(3, world_size=world)
    for rank in range(world):
        batches = list(data.batches(3, rank=rank, world_size=world))
        assert len(batches) == expected_batches
    if not shuffle:
        assert shards[1][:2] == [1, 1 + world]  # strided


def test_unshuffled_batches_are_views() -> None:
    data = make(10)
    batches = list(data.batches(4))
    for k, tensor in data.tensors.items():
        for b in batches:
            assert b[k].untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr(), k
    assert batches[1]["row"].data_ptr() == data.tensors["row"][4:].data_ptr()
    data.tensors["row"][5] = -1  # writes through: no copy was taken
    assert batches[1]["row"].tolist() == [4, -1, 6, 7]


def test_shuffled_batches_do_not_alias_the_data() -> None:
    data = make(10)
    batch = next(data.batches(10, shuffle=True, generator=torch.Generator().manual_seed(0)))
    before = batch["row"].clone()
    data.tensors["row"].zero_()
    assert torch.equal(batch["row"], before)


def test_from_encoded_keys_and_lengths() -> None:
    enc = Encoded(
        n=3,
        cat={"user": np.array([3, 4, 5])},
        multi={"tags": np.zeros((3, 2), np.int64)},
        num=np.ones((3, 2), np.float32),
        num_missing=np.zeros((3, 2), np.float32),
        hist={"h": {"items": np.zeros((3, 4), np.int64)}},
        labels=np.array([[1.0], [0.0], [1.0]], np.float32),
        label_mask=np.ones((3, 1), np.float32),
    )
    data = TensorData.from_encoded(enc)
    assert len(data) == 3
    assert set(data.tensors) == {"cat/user", "multi/tags", "num", "num_missing", "hist/h/items", "labels", "label_mask"}
    assert data.tensors["cat/user"].tolist() == [3, 4, 5]
    assert data.tensors["labels"].dtype == torch.float32
    assert len(TensorData({})) == 0
