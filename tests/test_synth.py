"""``ranker datasets synth``: deterministic Criteo-like parquet written in chunks, a config that trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ranker.cli import main
from ranker.data.synth import BLOCK, ZIPF_S, SynthSpec, parse_count, rows_of, write_synth, zipf_ids
from ranker.errors import ConfigError


def _train(out: Path) -> pa.Table:
    return pq.read_table(out / "train")


def test_same_seed_same_data_other_seed_other_data(tmp_path: Path) -> None:
    spec = SynthSpec(rows=3000, cardinality=500, files=2, categorical=4)
    write_synth(spec, tmp_path / "a", chunk_rows=1000)
    write_synth(spec, tmp_path / "b", chunk_rows=1000)
    write_synth(SynthSpec(rows=3000, cardinality=500, files=2, categorical=4, seed=1), tmp_path / "c", chunk_rows=1000)
    for name in ("train/part-00000.parquet", "train/part-00001.parquet", "valid.parquet", "test.parquet"):
        assert pq.read_table(tmp_path / "a" / name).equals(pq.read_table(tmp_path / "b" / name)), name
    assert not _train(tmp_path / "a").equals(_train(tmp_path / "c"))
    # valid and test are other streams of the generator, not copies of train
    assert not pq.read_table(tmp_path / "a" / "valid.parquet").equals(pq.read_table(tmp_path / "a" / "test.parquet"))


def test_chunk_size_changes_neither_the_rows_nor_their_order_and_bounds_the_row_groups(tmp_path: Path) -> None:
    spec = SynthSpec(rows=2 * BLOCK + 77, cardinality=1000, files=3, categorical=3)
    write_synth(spec, tmp_path / "big", chunk_rows=1 << 20)
    write_synth(spec, tmp_path / "small", chunk_rows=999)
    assert _train(tmp_path / "big").equals(_train(tmp_path / "small"))
    for f in sorted((tmp_path / "small" / "train").iterdir()):
        meta = pq.ParquetFile(f).metadata
        assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= 999
    # any cut of the row range gives the same rows
    whole = rows_of(spec, "train", 100, 9000)
    parts = [rows_of(spec, "train", a, b) for a, b in ((100, 4000), (4000, 8192), (8192, 9000))]
    assert whole.equals(pa.concat_tables(parts))


def test_schema_click_rate_missing_values_and_metadata(tmp_path: Path) -> None:
    meta = write_synth(SynthSpec(rows=20_000, cardinality=100_000, files=1, categorical=8), tmp_path)
    table = _train(tmp_path)
    assert table.column_names == ["click", *[f"I{k}" for k in range(1, 14)], *[f"C{j}" for j in range(1, 9)]]
    assert str(table.schema.field("click").type) == "int8" and str(table.schema.field("C1").type) == "int64"
    rate = float(np.asarray(table["click"]).mean())
    assert 0.03 < rate < 0.25 and rate == pytest.approx(meta["click_rate"]["train"])
    assert table["I1"].null_count == 0 and 0.35 < table["I4"].null_count / table.num_rows < 0.45
    assert np.nanmin(np.asarray(table["I2"].to_numpy(zero_copy_only=False))) >= 0
    saved = json.loads((tmp_path / "synth.json").read_text())
    assert saved["args"]["rows"] == 20_000 and saved["rows"]["valid"] == 2000
    assert saved["cardinalities"]["C1"] == 100_000 and saved["cardinalities"]["C8"] >= 3


def test_ids_follow_the_bounded_power_law() -> None:
    """Share of id 0 = F(2) = (2^(1−s) − 1) / ((n + 1)^(1−s) − 1), the inverse CDF's first cell."""
    n = 10_000_000
    ids = zipf_ids(np.random.default_rng(0).random(400_000), n)  # O(1) memory in n
    assert ids.min() >= 0 and ids.max() < n
    expected = (2 ** (1 - ZIPF_S) - 1) / ((n + 1) ** (1 - ZIPF_S) - 1)
    assert (ids == 0).mean() == pytest.approx(expected, abs=0.003)
    assert (ids == 0).mean() > (ids == 1).mean() > (ids == 10).mean()
    assert zipf_ids(np.array([0.0, 0.999999999]), 5).tolist() == [0, 4]


def test_count_suffixes_and_errors_name_the_flag() -> None:
    assert [parse_count(t, "--rows") for t in ("1000", "1k", "10M", "50M", "2e6", "1.5k")] == [
        1000,
        1000,
        10_000_000,
        50_000_000,
        2_000_000,
        1500,
    ]
    for bad in ("", "ten", "0", "-5", "1.5", "3x"):
        with pytest.raises(ConfigError, match="--rows"):
            parse_count(bad, "--rows")
    with pytest.raises(ConfigError, match="--files"):
        SynthSpec(rows=3, cardinality=5, files=4)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--rows", "lots", "--cardinality", "10"], "--rows"),
        (["--rows", "0", "--cardinality", "10"], "--rows"),
        (["--rows", "100", "--cardinality", "1.5"], "--cardinality"),
        (["--rows", "100", "--cardinality", "10", "--files", "0"], "--files"),
        (["--rows", "100", "--cardinality", "10", "--chunk-rows", "0"], "--chunk-rows"),
        (["--rows", "100", "--cardinality", "10", "--seed", "-1"], "--seed"),
    ],
)
def test_cli_refuses_bad_arguments_by_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], flag: str
) -> None:
    assert main(["datasets", "synth", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and flag in err


def test_written_config_trains_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANKER_THREADS", "1")
    out = tmp_path / "synth"
    argv = ["datasets", "synth", "--rows", "6k", "--cardinality", "1k", "--files", "2", "--categorical", "6"]
    assert main([*argv, "--out", str(out), "--eval-rows", "2k", "--chunk-rows", "2500"]) == 0
    assert "6,000 train rows in 2 file(s)" in capsys.readouterr().out
    run = tmp_path / "run"
    sets = ["train.epochs=3", "train.batch_size=256", "train.lr=0.005", "train.progress=false"]
    rc = main(["train", str(out / "synth.yaml"), "--out", str(run), *[a for s in sets for a in ("--set", s)]])
    assert rc == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["rows"] == {"train": 6000, "valid": 2000, "test": 2000}
    assert metrics["stream"]["chunk_rows"] == 65536
    ceiling = json.loads((out / "synth.json").read_text())["ceiling_auc_valid"]
    assert 0.75 < ceiling < 0.85  # the hidden logistic model's own AUC
    assert metrics["valid"]["click"]["auc"] > 0.6 and metrics["test"]["click"]["auc"] > 0.6
