"""``data.stream``: the train split read from parquet in chunks, shuffled in a buffer, fitted by one pass."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ranker.cli import main
from ranker.config import load_config
from ranker.config.schema import RunConfig, StreamConfig
from ranker.data.preprocess import Preprocessor
from ranker.data.stream import StreamedTrain, TrainFiles, fit_streaming
from ranker.data.synth import SynthSpec, write_synth
from ranker.data.tensors import Batch, TensorData
from ranker.errors import ConfigError, DataError
from ranker.ranking.run import prepare_run_data, train_run

ROWS = 3000


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synth(SynthSpec(rows=ROWS, cardinality=400, files=3, categorical=4, eval_rows=500), out, chunk_rows=700)
    return out


def _config(synth: Path, **stream: int) -> RunConfig:
    cfg = load_config(synth / "synth.yaml")
    data = cfg.data.model_copy(update={"stream": StreamConfig(**stream)})
    return cfg.model_copy(update={"data": data})


def _rows(batches: list[Batch]) -> np.ndarray:
    """Each row as one float64 vector (ids, numbers, labels), in batch order."""
    keys = sorted(batches[0])
    return np.concatenate(
        [np.concatenate([b[k].double().reshape(len(b[k]), -1).numpy() for k in keys], axis=1) for b in batches]
    )


def _sorted(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort(rows.T[::-1])]


def _epoch(stream: StreamedTrain, seed: int, batch_size: int = 128) -> list[Batch]:
    return list(stream.batches(batch_size, generator=torch.Generator().manual_seed(seed)))


def test_a_streamed_epoch_holds_the_same_rows_as_the_in_memory_table(synth: Path) -> None:
    prep = prepare_run_data(_config(synth, chunk_rows=256, shuffle_buffer=500), synth)
    assert prep.stream is not None and len(prep.stream) == ROWS
    streamed = _epoch(prep.stream, 0)
    assert [len(b["labels"]) for b in streamed] == [128] * (ROWS // 128) + [ROWS % 128]
    memory = TensorData.from_encoded(prep.pre.transform(pq.read_table(synth / "train")))
    in_memory = list(memory.batches(128, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert np.array_equal(_sorted(_rows(streamed)), _sorted(_rows(in_memory)))
    assert not np.array_equal(_rows(streamed), _rows(list(memory.batches(128))))  # shuffled


def test_same_seed_same_batches_other_seed_other_order(synth: Path) -> None:
    prep = prepare_run_data(_config(synth, chunk_rows=256, shuffle_buffer=500), synth)
    assert prep.stream is not None
    a, b, c = (_rows(_epoch(prep.stream, s)) for s in (3, 3, 4))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and np.array_equal(_sorted(a), _sorted(c))


def test_memory_is_bounded_by_buffer_chunk_and_one_batch(synth: Path) -> None:
    prep = prepare_run_data(_config(synth, chunk_rows=256, shuffle_buffer=500), synth)
    assert prep.stream is not None
    _epoch(prep.stream, 0, batch_size=100)
    assert 500 < prep.stream.max_rows_held <= 500 + 256 + 100 < ROWS


def test_without_a_buffer_rows_keep_their_file_order_and_the_files_are_permuted(synth: Path) -> None:
    """shuffle_buffer 0: each file's rows in file order, the files in a seeded order."""
    prep = prepare_run_data(_config(synth, chunk_rows=256, shuffle_buffer=0), synth)
    assert prep.stream is not None
    files = [
        _rows(list(TensorData.from_encoded(prep.pre.transform(pq.read_table(f))).batches(ROWS)))
        for f in sorted((synth / "train").iterdir())
    ]
    orders = set()
    for seed in range(6):
        rows = _rows(_epoch(prep.stream, seed))
        starts = np.cumsum([0, *[len(f) for f in files]])
        order = [next(i for i, f in enumerate(files) if np.array_equal(rows[starts[k]], f[0])) for k in range(3)]
        assert np.array_equal(rows, np.concatenate([files[i] for i in order]))
        orders.add(tuple(order))
    assert len(orders) > 1


def test_a_row_range_reads_only_its_rows_of_the_concatenated_files(synth: Path) -> None:
    """Rows [start, stop) of the files in a given order, across file and row-group boundaries
    (3 files of 1,000 rows, row groups of ≤ 700), each chunk named by its place in its file."""
    cfg = _config(synth)
    files = TrainFiles.open(synth / "train", cfg.data)
    order = [2, 0, 1]
    whole = pa.concat_tables([pq.read_table(files.files[i], columns=files.columns) for i in order])
    for start, stop in ((0, 3000), (650, 1720), (999, 1001), (1400, 1400), (2100, 2999)):
        chunks = list(files.range_chunks(order, start, stop, 256))
        assert all(t.num_rows <= 256 for _, _, t in chunks)
        got = pa.concat_tables([t for _, _, t in chunks]) if chunks else whole.slice(0, 0)
        assert got.equals(whole.slice(start, stop - start))
        for path, at, table in chunks:  # the chunk is those rows of its own file
            assert table.equals(pq.read_table(path, columns=files.columns).slice(at, table.num_rows))


def test_ranks_read_disjoint_shares_of_each_epoch_in_lockstep(synth: Path) -> None:
    """Two ranks with the same epoch generator: as many batches each, their rows together are the
    epoch's rows but the last ``rows mod 2`` of its file order; another epoch seed, other shares."""
    prep = prepare_run_data(_config(synth, chunk_rows=256, shuffle_buffer=300), synth)
    stream = prep.stream
    assert stream is not None
    everything = _sorted(_rows(_epoch(stream, 5)))

    def share(rank: int, world: int, seed: int) -> list[Batch]:
        generator = torch.Generator().manual_seed(seed)
        return list(stream.batches(64, generator=generator, rank=rank, world_size=world))

    for world in (2, 3):
        shares = [share(r, world, 5) for r in range(world)]
        assert {len(b) for b in shares} == {stream.num_batches(64, world)} == {-(-(ROWS // world) // 64)}
        rows = [_rows(b) for b in shares]
        assert all(len(r) == ROWS // world for r in rows)
        assert np.array_equal(
            _sorted(np.concatenate(rows)), everything
        )  # disjoint, nothing lost (3000 = 2·1500 = 3·1000)
        assert stream.max_rows_held <= 300 + 256 + 64
    assert np.array_equal(_rows(share(1, 2, 5)), _rows(share(1, 2, 5)))  # same seed, same batches
    assert not np.array_equal(_sorted(_rows(share(0, 2, 5))), _sorted(_rows(share(0, 2, 6))))


def test_the_fit_pass_learns_exact_vocabularies_and_sampled_numerics(synth: Path) -> None:
    cfg = _config(synth, chunk_rows=256, fit_sample_rows=ROWS)
    full = Preprocessor.for_data(cfg.data, ids="hash").fit(pq.read_table(synth / "train"))
    prep = prepare_run_data(cfg, synth)
    assert full.state_dict() == prep.pre.state_dict()  # a sample of every row: the in-memory fit
    small = Preprocessor.for_data(cfg.data, ids="hash")
    files = TrainFiles.open(synth / "train", prep.data)
    sample = fit_streaming(small, files, prep.data, StreamConfig(chunk_rows=256, fit_sample_rows=400), seed=0)
    assert 0 < sample.num_rows <= 400
    assert {k: v.to_state() for k, v in small.vocabs.items()} == {k: v.to_state() for k, v in full.vocabs.items()}
    assert small.numeric["I1"].mean == pytest.approx(full.numeric["I1"].mean, abs=0.2)


def test_streaming_needs_a_files_split(synth: Path) -> None:
    raw = load_config(synth / "synth.yaml").model_dump(mode="json")
    raw["data"].update(path="x.parquet", split={"kind": "random"})
    with pytest.raises(ValueError, match="stream: .*split.kind: files"):
        RunConfig.model_validate(raw)


def test_missing_directory_and_mismatched_files_are_named(synth: Path, tmp_path: Path) -> None:
    cfg = _config(synth)
    bad = tmp_path / "bad"
    shutil.copytree(synth, bad)
    shutil.rmtree(bad / "train")
    with pytest.raises(DataError, match="data.split.train: .*train: no such file or directory"):
        prepare_run_data(cfg, bad)
    (bad / "train").mkdir()
    with pytest.raises(DataError, match="holds no .parquet file"):
        prepare_run_data(cfg, bad)
    shutil.copy(synth / "train" / "part-00000.parquet", bad / "train" / "part-00000.parquet")
    other = pq.read_table(synth / "train" / "part-00001.parquet").rename_columns(
        [("C9" if c == "C2" else c) for c in pq.read_schema(synth / "train" / "part-00001.parquet").names]
    )
    pq.write_table(other, bad / "train" / "part-00001.parquet")
    with pytest.raises(DataError, match=r"part-00001.parquet: column 'C2' is missing"):
        prepare_run_data(cfg, bad)
    retyped = other.rename_columns(["C2" if c == "C9" else c for c in other.column_names])
    pq.write_table(retyped.set_column(1, "I1", retyped["I1"].cast(pa.float64())), bad / "train" / "part-00001.parquet")
    with pytest.raises(
        DataError, match=r"part-00001.parquet: column 'I1' is double where part-00000.parquet has float"
    ):
        prepare_run_data(cfg, bad)


def test_a_bad_value_is_named_by_its_row_in_its_file_before_training(synth: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(synth, bad)
    part = bad / "train" / "part-00002.parquet"
    table = pq.read_table(part)
    clicks = np.asarray(table["click"]).copy()
    clicks[300] = 7
    pq.write_table(table.set_column(0, "click", pa.array(clicks)), part, row_group_size=256)
    with pytest.raises(DataError, match=r"part-00002.parquet.*row 301"):
        prepare_run_data(_config(synth, chunk_rows=256), bad)


def _train(config: Path, run: Path, *sets: str) -> dict[str, float]:
    args = ["train", str(config), "--out", str(run)]
    base = ("train.batch_size=256", "train.lr=0.005", "train.progress=false", "train.epochs=2")
    for s in (*base, *sets):
        args += ["--set", s]
    assert main(args) == 0
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def larger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("larger")
    write_synth(SynthSpec(rows=10_000, cardinality=1000, files=3, categorical=6, eval_rows=3000), out)
    return out


def test_streaming_reaches_the_in_memory_validation_auc(
    larger: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the batch order differs. Tolerance 0.02: three seeds of the in-memory path alone
    spread over ≈ 0.007 valid AUC on this data (12k rows, 3k valid rows, measured once)."""
    monkeypatch.setenv("RANKER_THREADS", "1")
    streamed = _train(
        larger / "synth.yaml", tmp_path / "s", "data.stream.shuffle_buffer=2000", "data.stream.chunk_rows=1000"
    )
    memory = _train(larger / "synth.yaml", tmp_path / "m", "data.stream=null")
    a, b = streamed["valid"]["click"]["auc"], memory["valid"]["click"]["auc"]
    assert a > 0.6 and b > 0.6 and abs(a - b) < 0.02
    assert streamed["rows"]["train"] == memory["rows"]["train"] == 10_000


def test_resume_after_an_epoch_reproduces_the_uninterrupted_streamed_run(
    larger: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The engine checkpoints at epoch ends and recreates each epoch's generator, so a streamed
    epoch is read again from its start with the same file order and buffer draws."""
    monkeypatch.setenv("RANKER_THREADS", "1")
    sets = ("data.stream.shuffle_buffer=2000", "data.stream.chunk_rows=1000", "train.max_steps_per_epoch=15")
    whole = _train(larger / "synth.yaml", tmp_path / "whole", *sets)
    _train(larger / "synth.yaml", tmp_path / "cut", *sets, "train.epochs=1")  # stopped after epoch 1
    capsys.readouterr()
    resumed = _train(larger / "synth.yaml", tmp_path / "cut", *sets)  # rerun: resumes at epoch 2
    assert "after epoch 1" in capsys.readouterr().out
    assert resumed["valid"] == whole["valid"] and resumed["test"] == whole["test"]


def test_teacher_is_refused_with_streaming(larger: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--teacher: .*not with data.stream"):
        train_run(load_config(larger / "synth.yaml"), tmp_path / "r", teacher=tmp_path)


def test_stream_options_are_validated() -> None:
    for key in ("chunk_rows", "fit_sample_rows"):
        with pytest.raises(ValueError, match=key):
            StreamConfig.model_validate({key: 0})
    with pytest.raises(ValueError, match="shuffle_buffer"):
        StreamConfig.model_validate({"shuffle_buffer": -1})
