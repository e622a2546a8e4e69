"""The docs' results tables are generated from benchmarks/results/*.json and cannot drift.

Fast: no training, only reading the results files and rendering the tables.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import results_store  # noqa: E402
import update_tables  # noqa: E402


def test_every_generated_table_matches_its_results_files() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "update_tables.py"), "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_check_mode_catches_a_drifted_figure(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    body = update_tables.render("numerical-t-adult")
    assert body
    doc.write_text(f"<!-- table:numerical-t-adult -->\n{body}\n<!-- /table -->\n")
    assert update_tables.update(doc, check=True) == ([], [])
    doc.write_text(doc.read_text().replace("0.9210 ± 0.0007", "0.9211 ± 0.0007"))
    assert update_tables.update(doc, check=True)[0] == ["numerical-t-adult"]
    assert "0.9211" in doc.read_text()  # check mode writes nothing
    update_tables.update(doc, check=False)
    assert "0.9210 ± 0.0007" in doc.read_text()


def test_unknown_marker_is_reported(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- table:no-such-table -->\n| x |\n<!-- /table -->\n")
    assert update_tables.update(doc, check=True) == ([], ["no-such-table"])


def test_no_hand_typed_results_table_left() -> None:
    """Every table row in the generated docs sits between markers, except header lines (tables
    indented inside a list item are readings of the generated ones and are not checked)."""
    for path in update_tables.docs():
        lines = path.read_text().split("\n")
        inside = False
        for i, line in enumerate(lines):
            if line.startswith("<!-- table:"):
                inside = True
            elif line.startswith("<!-- /table"):
                inside = False
            elif line.startswith("|") and not inside:
                header = line.startswith("|---") or (i + 1 < len(lines) and lines[i + 1].startswith("|---"))
                assert header, f"{path.name}:{i + 1}: hand-typed table row {line[:80]}"


@pytest.mark.parametrize("path", sorted((BENCH / "results").glob("*.json")), ids=lambda p: p.name)
def test_results_file_has_the_one_layout(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert doc["layout"] == results_store.LAYOUT
    assert doc["study"] == path.stem
    assert doc["source"] in (
        results_store.SOURCE_RUNNER,
        results_store.SOURCE_MIGRATED,
        results_store.SOURCE_TRANSCRIBED,
    )
    keys = [r["key"] for r in doc["records"]]
    assert keys and len(keys) == len(set(keys))
    for r in doc["records"]:
        assert {"key", "name", "config", "protocol", "seed", "metrics", "provenance"} <= set(r)
        assert {"command", "commit", "date", "machine"} <= set(r["provenance"])
        assert r["seed"] is None or isinstance(r["seed"], int)


def test_save_result_stamps_provenance_and_merges(tmp_path: Path) -> None:
    path = tmp_path / "grid-x-c-frappe.json"
    results_store.save_result(path, "MLP|2021", {"dataset": "c-frappe", "test": {"click": {"auc": 0.9}}})
    merged = results_store.save_result(path, "MLP|2022", {"dataset": "c-frappe", "test": {}})
    assert list(merged) == ["MLP|2021", "MLP|2022"]
    rec = results_store.records(path)[0]
    assert (rec["name"], rec["seed"], rec["protocol"]) == ("MLP", 2021, "C-Frappe")
    prov = rec["provenance"]
    assert prov["commit"] != "" and prov["date"].endswith("+00:00") and "CPUs" in prov["machine"]
    assert prov["command"].startswith("python ")
    assert results_store.load_results(path)["MLP|2021"]["test"]["click"]["auc"] == 0.9


def test_an_empty_table_does_not_swallow_the_next(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- table:no-such-a -->\n<!-- /table -->\nkept prose\n<!-- table:no-such-b -->\n| x |\n<!-- /table -->\n"
    )
    assert update_tables.update(doc, check=True) == ([], ["no-such-a", "no-such-b"])
    assert "kept prose" in doc.read_text()


SERVE_TABLES = ("serve-recommend", "serve-stages", "serve-score", "serve-events", "serve-provenance")
SERVE_TABLES += tuple(f"{t}-ml1m" for t in SERVE_TABLES)


def _header_columns(page: Path) -> dict[str, int]:
    """Columns of the header line above each table marker of `page`."""
    lines = page.read_text().split("\n")
    return {
        line[len("<!-- table:") : -len(" -->")]: lines[i - 2].count("|") - 1
        for i, line in enumerate(lines)
        if line.startswith("<!-- table:")
    }


def test_serving_tables_before_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Until serve_bench.py has written its results file, each serving table is one row saying so,
    with as many cells as the page's header."""
    monkeypatch.setattr(update_tables, "SERVE", {"": tmp_path / "a.json", "-ml1m": tmp_path / "b.json"})
    columns = _header_columns(ROOT / "docs" / "experiments" / "serving.md")
    assert set(SERVE_TABLES) <= set(columns)
    for name in SERVE_TABLES:
        body = update_tables.render(name)
        assert body is not None and body.startswith("| not measured yet") and "\n" not in body
        assert body.count("|") - 1 == columns[name], name


def test_serving_tables_from_a_results_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "serve-latency.json"
    load = {"load_before": 0.1, "load_after": 0.9, "cpus": 2}
    timing = {"p50_ms": 12.34, "p99_ms": 40.0, "mean_ms": 15.0}
    http = {"requested": 10_000, "errors": 0, "seconds": 100.0, **timing, **load}
    for clients in (8, 1):
        m = {"clients": clients, "requests": 10_000, "capped": False, "req_per_s": 80.0, **http}
        m |= {"workers": 1, "threads_per_worker": 2, "store": "sqlite"}
        results_store.save_result(path, f"recommend|workers=1|store=sqlite|clients={clients}", m, seed=None)
    stages = {s: timing for s in update_tables.SERVE_STAGES}
    results_store.save_result(path, "stages|threads=1", {"threads": 1, "requests": 2000, "stages": stages, **load})
    score = {"path": "http", "threads": 2, "candidates": 1000, "history": 50, "requests": 7, "capped": True}
    results_store.save_result(path, "score|http|threads=2", {**http, **score})
    events = {"store": "redis", "durability": "Redis appendonly yes, appendfsync always", "batch": 100}
    events |= {"requests": 2000, "events_per_s": 12345.6, "clients": 1}
    results_store.save_result(path, "events|redis|batch=100", {**http, **events})
    monkeypatch.setattr(update_tables, "SERVE", {"": path, "-ml1m": path})
    columns = _header_columns(ROOT / "docs" / "experiments" / "serving.md")
    recommend = update_tables.render("serve-recommend")
    assert recommend is not None
    assert recommend.split("\n") == [
        "| 1 × 2 | sqlite | 1 | 10,000 | 0 | 12.3 | 40.0 | 80.0 | 0.1 → 0.9 |",
        "| 1 × 2 | sqlite | 8 | 10,000 | 0 | 12.3 | 40.0 | 80.0 | 0.1 → 0.9 |",
    ]
    stage_rows = (update_tables.render("serve-stages") or "").split("\n")
    assert len(stage_rows) == len(update_tables.SERVE_STAGES)
    assert stage_rows[0] == "| 1 | history | 12.34 | 40.00 | 15.00 | 2,000 | 0.1 → 0.9 |"
    assert "| 7 (time cap) |" in (update_tables.render("serve-score") or "")
    assert "| 12,346 |" in (update_tables.render("serve-events") or "")
    for name in SERVE_TABLES:
        body = update_tables.render(name)
        assert body is not None and "not measured" not in body, name
        assert {line.count("|") - 1 for line in body.split("\n")} == {columns[name]}, name


def test_lever_ledger_pairs_each_run_with_its_run_without(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lever's row shows its figures and the difference to the run without it; a lever whose
    run has no record yet says "not finished"; record keys' "|" cannot split a cell."""
    path = tmp_path / "r.json"
    for key, ndcg, hr in (("base|2021", 0.1500, 0.2500), ("lever|2021", 0.1525, 0.2600)):
        split = {"NDCG@10": ndcg, "HR@200": 0.75, "HR@10": hr}
        results_store.save_result(path, key, {"valid": split, "test": split}, seed=None)
    monkeypatch.setattr(update_tables, "RESULTS", tmp_path)
    levers = [
        {"lever": "a lever", "run": ("r", "lever|2021"), "base": ("r", "base|2021"), "base_label": "none"},
        {"lever": "running", "run": ("r", "later|2021"), "base": ("r", "base|2021"), "base_label": "none"},
    ]
    monkeypatch.setattr(update_tables, "LEVERS_R_ML1M", levers)
    lines = update_tables.levers_r_ml1m().split("\n")
    assert lines[2].startswith("| a lever | none | 0.1525 (+0.0025) | 0.7500 (+0.0000) | 0.2600 (+0.0100) |")
    assert lines[3].startswith("| running | none | not finished |")
    columns = lines[0].count("|")
    assert all(line.replace("\\|", "").count("|") == columns for line in lines)
    monkeypatch.setattr(update_tables, "LEVERS_R_ML1M", [{**levers[0], "base": ("r", "gone|2021")}])
    with pytest.raises(SystemExit, match="gone"):  # a deleted baseline fails the build, not a silent row loss
        update_tables.levers_r_ml1m()


def _save_many(path: str, prefix: str) -> None:
    for i in range(20):
        results_store.save_result(Path(path), f"{prefix}|{i}", {"i": i}, seed=None)


def test_processes_writing_one_results_file_at_once_lose_no_record(tmp_path: Path) -> None:
    import multiprocessing

    path = tmp_path / "two-stage-x-ts-ml1m.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_save_many, args=(str(path), f"seed{s}")) for s in (1, 2, 3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    keys = set(results_store.load_results(path))
    assert keys == {f"seed{s}|{i}" for s in (1, 2, 3) for i in range(20)}
