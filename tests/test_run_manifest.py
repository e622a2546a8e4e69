"""Run directories verify themselves (ranker.run_manifest): what a fresh run's manifest covers,
that the commands which read or write a finished run keep it true, the states of an unsealed
directory, and that a bundle built from verified runs loads and verifies. The damaged-run cases
themselves are corpus cases (tests/corpus/rundir/, tests/corpus/bundle/)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from corpus_harness import BASES, train_fixture

from ranker import run_manifest as rm
from ranker.cli import main
from ranker.errors import DataError
from ranker.run_manifest import file_sha256, seal_run, verify_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("manifest-runs")
    return {kind: train_fixture(kind, root) for kind in ("ranking", "retrieval")}


def _copy(run: Path, tmp_path: Path, name: str = "run") -> Path:
    dest = tmp_path / name
    shutil.copytree(run, dest)
    return dest


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_a_fresh_run_is_sealed_over_every_file_training_wrote(runs: dict[str, Path]) -> None:
    run = runs["ranking"]
    manifest = verify_run(run, needs=("config.yaml", "preprocessor.json", "model.safetensors"))
    assert manifest is not None and manifest["format"] == "ranker-run/1" and manifest["kind"] == "ranking"
    files = manifest["files"]
    assert set(files) == {
        "config.yaml",
        "preprocessor.json",
        "model.safetensors",
        "metrics.json",
        "log.jsonl",
        "calibration_test.npz",
    }  # report.html, checkpoints/ and the manifest itself are not sealed
    assert (run / "report.html").is_file() and (run / "checkpoints").is_dir()
    for name, entry in files.items():
        data = (run / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    lines = "".join(f"{n} {e['sha256']} {e['bytes']}\n" for n, e in sorted(files.items()))
    assert manifest["digest"] == hashlib.sha256(lines.encode()).hexdigest()


def test_retrieval_run_seals_its_serving_files(runs: dict[str, Path]) -> None:
    manifest = verify_run(runs["retrieval"])
    assert manifest is not None and manifest["kind"] == "retrieval"
    assert {"items.parquet", "histories.parquet", "data.json", "model.safetensors"} <= set(manifest["files"])


def test_evaluate_and_report_keep_the_run_verified(runs: dict[str, Path], tmp_path: Path) -> None:
    run = _copy(runs["ranking"], tmp_path)
    before = (run / "manifest.json").read_bytes()
    (run / "report.html").unlink()
    code, out, err = _cli(["evaluate", str(run)])
    assert code == 0 and json.loads(out)["split"] == "test" and "warning" not in err
    code, out, _ = _cli(["report", str(run)])
    assert code == 0 and (run / "report.html").is_file()  # report rewrites an unsealed file
    assert (run / "manifest.json").read_bytes() == before
    assert verify_run(run) is not None


def test_files_added_after_training_are_ignored(runs: dict[str, Path], tmp_path: Path) -> None:
    run = _copy(runs["ranking"], tmp_path)
    (run / "notes.txt").write_text("my notes")  # not part of the run: no error, no warning
    (run / "model.pt2").write_bytes(b"an export")
    code, _, err = _cli(["evaluate", str(run)])
    assert code == 0 and err == ""
    manifest = verify_run(run)
    assert manifest is not None and not {"notes.txt", "model.pt2"} & set(manifest["files"])
    assert "model.pt2" not in rm.sealed_names(run)  # an export is never sealed, even by a retrain


def test_predict_reads_a_sealed_run_directory_as_a_run(runs: dict[str, Path], tmp_path: Path) -> None:
    # a run directory now holds a manifest.json too: it must not be taken for a bundle
    rows = tmp_path / "rows.parquet"
    pq.write_table(pcsv.read_csv(BASES / "ranking" / "rows.csv"), rows)
    code, out, err = _cli(["predict", str(runs["ranking"]), str(rows), "--out", str(tmp_path / "s.parquet")])
    assert code == 0, err
    assert pq.read_table(tmp_path / "s.parquet").num_rows == pq.read_table(rows).num_rows == 160


def test_an_older_run_warns_once_and_loads(runs: dict[str, Path], tmp_path: Path) -> None:
    run = _copy(runs["ranking"], tmp_path, "older")
    (run / "manifest.json").unlink()
    code, _, err = _cli(["evaluate", str(run)])  # family_of_run and load_run both check it
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert code == 0 and len(warnings) == 1 and "unverified" in warnings[0]


def test_training_again_unseals_until_the_end_then_seals_anew(runs: dict[str, Path], tmp_path: Path) -> None:
    from ranker.config import load_config
    from ranker.rundir import begin_run

    run = _copy(runs["ranking"], tmp_path)
    cfg = load_config(run / "config.yaml")
    begin_run(run, cfg, load_config)  # a rerun of the same command starts: the run is not finished
    assert not (run / "manifest.json").exists() and not (run / "metrics.json").exists()
    with pytest.raises(DataError, match=r"the run did not finish \(its last checkpoint is epoch 1"):
        verify_run(run)
    assert verify_run(run, finished=False) is None  # `ranker report` plots a run in progress
    code, _, err = _cli(["train", str(run / "config.yaml"), "--out", str(run)])
    assert code == 0, err
    assert verify_run(run) is not None and (run / "metrics.json").is_file()


def test_report_of_a_run_in_progress_is_not_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    run = _copy(runs["ranking"], tmp_path)
    for name in ("manifest.json", "metrics.json", "model.safetensors"):
        (run / name).unlink()
    code, _, err = _cli(["report", str(run)])
    assert code == 0 and err == ""


def test_the_hash_cache_never_hides_a_change(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 64)
    first = file_sha256(path)
    path.write_bytes(b"b" * 64)  # same size, same inode, within one timestamp tick
    assert file_sha256(path) == hashlib.sha256(b"b" * 64).hexdigest() != first
    old = 1_600_000_000
    os.utime(path, (old, old))  # mtime settled long ago (ctime is now: still not cached)
    assert file_sha256(path) == hashlib.sha256(b"b" * 64).hexdigest()


def test_a_manifest_must_list_what_the_load_reads(runs: dict[str, Path], tmp_path: Path) -> None:
    run = _copy(runs["ranking"], tmp_path)
    (run / "manifest.json").unlink()
    (run / "preprocessor.json").rename(run / "kept.json")
    seal_run(run, "ranking")  # a consistent manifest that leaves preprocessor.json out
    (run / "kept.json").rename(run / "preprocessor.json")
    with pytest.raises(DataError, match=r"manifest\.json: does not list preprocessor\.json"):
        verify_run(run, needs=("config.yaml", "preprocessor.json"))


def test_a_bundle_of_verified_runs_loads_and_its_runs_verify_on_their_own(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    from ranker.serving.bundle import _hash_files, _version, load_bundle, verify_bundle, write_bundle

    out = tmp_path / "b"
    write_bundle(runs["retrieval"], out, ranker_run=runs["ranking"], index="exact", min_item_overlap=0.0)
    manifest = verify_bundle(out)
    assert {"retrieval/manifest.json", "ranker/manifest.json"} <= set(manifest["files"])
    inner = verify_run(out / "retrieval")  # histories.parquet emptied: its run manifest was re-written
    assert (
        inner is not None
        and inner["files"]["histories.parquet"]["bytes"] < (runs["retrieval"] / "histories.parquet").stat().st_size
    )
    assert verify_run(out / "ranker", needs=("preprocessor.json",)) is not None
    assert load_bundle(out).ranking is not None
    # a bundle written before run manifests (none inside it) still loads: its own manifest covers the runs
    for stage in ("retrieval", "ranker"):
        (out / stage / "manifest.json").unlink()
    doc = json.loads((out / "manifest.json").read_text())
    doc["files"] = _hash_files(out)
    doc["version"] = _version(doc["files"])
    (out / "manifest.json").write_text(json.dumps(doc))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert load_bundle(out).ranking is not None
    assert err.getvalue() == ""
