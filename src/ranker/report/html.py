"""Build the self-contained ``report.html`` of a training run directory.

Reads ``log.jsonl``, ``metrics.json``, ``calibration_<split>.npz`` and ``config.yaml`` (every one
optional); a missing or unreadable file drops its sections and leaves a short note instead.
Plots are PNGs embedded as base64 ``<img>``; the page has no JavaScript and no external assets.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from ranker.errors import DataError
from ranker.report import plots, retrieval
from ranker.report.format import img, note, num, table

__all__ = ["write_report"]

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.2em .6em}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}.note{color:#8a5a00}
.plots{display:flex;flex-wrap:wrap;gap:1em}pre{background:#f6f6f6;padding:1em}img{max-width:100%}
.unusable{background:#fde8e8;border:1px solid #c33;padding:.6em 1em}"""
_CALIBRATION_FILES = ("calibration_test.npz", "calibration_valid.npz")


def _json_object(text: str) -> dict[str, Any] | None:
    """``text`` parsed as JSON (NaN tokens allowed) if it is an object, else None."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _read_log(text: str) -> tuple[list[dict[str, Any]], int]:
    """Epoch records of ``log.jsonl``'s text and the number of lines that were not JSON objects."""
    parsed = [_json_object(line) for line in text.splitlines() if line.strip()]
    records = [r for r in parsed if r is not None]
    return records, len(parsed) - len(records)


def _read_calibration(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{task: (labels, probs)}`` from the ``<task>__labels`` / ``<task>__probs`` arrays."""
    with np.load(path, allow_pickle=False) as npz:
        tasks = [n.removesuffix("__labels") for n in npz.files if n.endswith("__labels")]
        return {t: (npz[f"{t}__labels"], npz[f"{t}__probs"]) for t in tasks if f"{t}__probs" in npz.files}


def _by_task(obj: Any) -> dict[str, dict[str, Any]]:
    """Keep only the ``{task: {metric: value}}`` shaped part of ``obj``."""
    return {str(t): m for t, m in obj.items() if isinstance(m, dict)} if isinstance(obj, dict) else {}


def _baseline(metrics: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The ``baseline`` entry of ``metrics.json`` (if a dict) and its display name."""
    base = metrics.get("baseline")
    return (base, str(base.get("name", "baseline"))) if isinstance(base, dict) else (None, "")


def _best_epoch(metrics: dict[str, Any], log: list[dict[str, Any]]) -> int | None:
    """``metrics.json``'s best_epoch, else the log epoch with the highest valid_score."""
    best = metrics.get("best_epoch")
    if isinstance(best, int) and not isinstance(best, bool):
        return best
    scored = [(num(r.get("valid_score")), num(r.get("epoch"))) for r in log]
    scored = [(s, e) for s, e in scored if math.isfinite(s) and math.isfinite(e)]
    return int(max(scored, key=lambda se: se[0])[1]) if scored else None  # first best


def _metrics_table(metrics: dict[str, Any]) -> str:
    """Per task and metric: model vs baseline (and the difference) for the test/valid splits."""
    baseline, base_name = _baseline(metrics)
    model = {s: _by_task(metrics.get(s)) for s in ("test", "valid") if _by_task(metrics.get(s))}
    if not model:
        return note("metrics.json has no per-task test or valid metrics.")
    base = {s: _by_task(baseline.get(s)) if baseline else {} for s in model}
    header = ["task", "metric"]
    for s in model:
        header += [f"{s}: model"] + ([f"{s}: {base_name}", f"{s}: Δ"] if baseline else [])
    rows = []
    for t in dict.fromkeys(t for per_task in model.values() for t in per_task):
        for m in dict.fromkeys(m for per_task in model.values() for m in per_task.get(t, {})):
            row: list[Any] = [t, m]
            for s in model:
                v, b = model[s].get(t, {}).get(m), base[s].get(t, {}).get(m)
                row += [v, b, num(v) - num(b)] if baseline else [v]
            rows.append(row)
    notes = ["Δ = model − baseline (lower is better for losses)."] if baseline else []
    if baseline and baseline.get("regression"):
        notes.append(f"Regression tasks: the {base_name} column is the {baseline['regression']} (its value: mean).")
    return table(header, rows) + "".join(note(n) for n in notes)


def _summary_table(metrics: dict[str, Any]) -> str:
    """Key/value table of the scalar top-level entries of ``metrics.json``."""
    rows = [(k, v) for k, v in metrics.items() if v is None or isinstance(v, str | int | float)]
    return table(["key", "value"], rows) if rows else ""


def _log_sections(log: list[dict[str, Any]], best: int | None, per_task: bool = True) -> list[str]:
    """Training-loss and (`per_task`) per-task validation-metric plots, plus a per-epoch table."""
    epochs = [num(r.get("epoch", i + 1)) for i, r in enumerate(log)]
    out = []
    losses = [num(r.get("train_loss")) for r in log]
    if any(math.isfinite(v) for v in losses):
        out.append(img(plots.plot_train_loss(epochs, losses, best), "training loss per epoch"))
    else:
        out.append(note("log.jsonl has no train_loss values."))
    valid = [_by_task(r.get("valid")) for r in log] if per_task else []
    tasks = list(dict.fromkeys(t for v in valid for t in v))
    names = list(dict.fromkeys(m for v in valid for t in v.values() for m in t))
    panels = [m for m in ("auc", "gauc", "rmse") if m in names] or names[:1]
    if panels:
        series = {m: {t: [num(v.get(t, {}).get(m)) for v in valid] for t in tasks} for m in panels}
        out.append(
            img(plots.plot_valid_metrics(epochs, series, best), "validation " + " and ".join(panels) + " per epoch")
        )
    elif per_task:
        out.append(note("log.jsonl has no per-task validation metrics."))
    columns = list(dict.fromkeys(k for r in log for k, v in r.items() if v is None or isinstance(v, int | float)))
    out.append(table(columns, ([r.get(c) for c in columns] for r in log)))
    return out


def _auc_section(metrics: dict[str, Any]) -> str:
    """Bar chart of per-task AUC (test, else valid) next to the baseline's."""
    split = "test" if _by_task(metrics.get("test")) else "valid"
    model = _by_task(metrics.get(split))
    tasks = [t for t, m in model.items() if "auc" in m]
    if not tasks:
        return note("No per-task AUC in metrics.json; AUC chart omitted.")
    baseline, base_name = _baseline(metrics)
    base_auc = _by_task(baseline.get(split)) if baseline else {}
    base = [num(base_auc.get(t, {}).get("auc")) for t in tasks] if baseline else None
    png = plots.plot_auc_bars(tasks, [num(model[t]["auc"]) for t in tasks], base, split, base_name)
    return img(png, f"{split} AUC per task" + (f" vs {base_name}" if baseline else ""))


def _gates_section(log: list[dict[str, Any]], metrics: dict[str, Any], best: int | None) -> list[str]:
    """Mixture-of-experts gates: entropy per epoch, mean weights and statistics on test."""
    per_epoch: list[dict[str, Any]] = [g if isinstance(g := r.get("gates"), dict) else {} for r in log]
    names = list(dict.fromkeys(g for gates in per_epoch for g in gates))
    test: dict[str, Any] = g if isinstance(g := metrics.get("gates"), dict) else {}
    if not names and not test:
        return []
    out = [
        "<h2>Experts and gates</h2>",
        "<p>Entropy = mean over rows of H(gate); usage entropy = H(mean gate). Both near 0: "
        "expert collapse; both near log E: the gate ignores its input.</p>",
    ]
    if names:
        epochs = [num(r.get("epoch", i + 1)) for i, r in enumerate(log)]
        entropy = {g: [num(gates.get(g, {}).get("entropy")) for gates in per_epoch] for g in names}
        top = {g: next(num(gates[g].get("max_entropy")) for gates in per_epoch if g in gates) for g in names}
        out.append(img(plots.plot_gate_entropy(epochs, entropy, top, best), "gate entropy per epoch"))
    if test:
        weights = {g: s["weights"] for g, s in test.items() if isinstance(s, dict) and "weights" in s}
        if weights:
            out.append(img(plots.plot_gate_weights(weights), "mean gate weights on test"))
        rows = [
            (
                g,
                s.get("entropy"),
                s.get("usage_entropy"),
                s.get("max_entropy"),
                " ".join(f"{w:.3f}" for w in s.get("weights", [])),
            )
            for g, s in test.items()
            if isinstance(s, dict)
        ]
        out.append(table(["gate (test)", "entropy", "usage entropy", "log E", "mean weights"], rows))
    return out


def _serving_section(metrics: dict[str, Any]) -> list[str]:
    """How the serving score (weighted task outputs) ranks each task on test."""
    serving = metrics.get("serving")
    if not isinstance(serving, dict) or not _by_task(serving.get("test")):
        return []
    rows = [(t, m.get("auc"), m.get("gauc")) for t, m in _by_task(serving.get("test")).items()]
    return [
        "<h3>Serving score</h3>",
        f"<p>{escape(str(serving.get('combine')))} of the task outputs with weights "
        f"{escape(json.dumps(serving.get('weights')))}, scored against each task's labels.</p>",
        table(["task", "AUC", "GAUC"], rows),
    ]


def _calibration_section(run_dir: Path) -> list[str]:
    """One reliability diagram per task from the first calibration file found."""
    found = [run_dir / n for n in _CALIBRATION_FILES if (run_dir / n).is_file()]
    found += sorted(p for p in run_dir.glob("calibration_*.npz") if p not in found)
    if not found:
        return [note("No calibration_<split>.npz; calibration plots omitted.")]
    try:
        per_task = _read_calibration(found[0])
        imgs = [img(plots.plot_calibration(t, y, p), f"calibration of {t}") for t, (y, p) in per_task.items()]
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        return [note(f"Could not use {found[0].name}: {err}")]
    if not per_task:
        return [note(f"{found[0].name} has no <task>__labels / <task>__probs pairs.")]
    return [
        f"<p>From {escape(found[0].name)}: 10 equal-frequency bins of the predicted "
        "probability; ECE = count-weighted mean |observed rate − mean prob|.</p>",
        '<div class="plots">' + "".join(imgs) + "</div>",
    ]


def _verdict(metrics: dict[str, Any]) -> list[str]:
    """A banner when the run is not usable, its warnings, and the reason of every value that is
    not a number."""
    out = []
    if metrics.get("usable") is False:
        out.append(
            f'<p class="unusable"><b>Not usable:</b> {escape(str(metrics.get("unusable", "")))} '
            "(<code>ranker train</code> exited with status 3).</p>"
        )
    warnings = metrics.get("warnings")
    for warning in warnings if isinstance(warnings, list) else []:
        out.append(f'<p class="unusable"><b>Warning:</b> {escape(str(warning))}</p>')
    undefined = metrics.get("undefined")
    if isinstance(undefined, dict) and undefined:
        out += [
            "<h3>Values that are not numbers</h3>",
            "<p>Written as <code>null</code> in metrics.json (n/a here), each with its reason.</p>",
            table(["value", "reason"], [(str(k), str(v)) for k, v in undefined.items()]),
        ]
    return out


def _text(path: Path) -> str | None:
    """The text of ``path`` (undecodable bytes replaced), or None if it is not a file."""
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def write_report(run_dir: Path | str) -> Path:
    """Write ``run_dir/report.html`` from the run's log, metrics, calibration data and config.

    Every input file is optional; a missing or malformed one leaves a note in the page in
    place of its sections. Returns the path of the written report.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run directory {run_dir} does not exist or is not a directory")
    if not any((run_dir / name).is_file() for name in ("metrics.json", "log.jsonl")):
        raise DataError(f"{run_dir}: not a run directory (no metrics.json or log.jsonl); nothing to report")
    log_text, metrics_text = _text(run_dir / "log.jsonl"), _text(run_dir / "metrics.json")
    log, bad_lines = _read_log(log_text) if log_text is not None else ([], 0)
    metrics = _json_object(metrics_text) if metrics_text is not None else None
    dataset = metrics.get("dataset") if metrics else None
    is_retrieval = retrieval.is_retrieval(metrics or {}, log)
    title = f"Run report: {run_dir.resolve().name}" + (f" — {dataset}" if dataset else "")

    body = [f"<h1>{escape(title)}</h1>", "<h2>Results</h2>"]
    if metrics is None:
        what = "is missing" if metrics_text is None else "is not a JSON object"
        body.append(note(f"metrics.json {what}; results omitted."))
    else:
        body += [*_verdict(metrics), "<h3>Run</h3>", _summary_table(metrics)]
        if is_retrieval:
            body += ["<h3>Metrics</h3>", *retrieval.results(metrics)]
        else:
            body += ["<h3>Metrics per task</h3>", _metrics_table(metrics), _auc_section(metrics)]
            body += _serving_section(metrics)
    body.append("<h2>Training</h2>")
    best = _best_epoch(metrics or {}, log)
    if log:
        body += _log_sections(log, best, per_task=not is_retrieval)
        if is_retrieval:
            body += retrieval.curves(log, metrics or {}, best)
    else:
        body.append(note("log.jsonl is missing or empty; training plots omitted."))
    if bad_lines:
        body.append(note(f"log.jsonl: skipped {bad_lines} line(s) that were not JSON objects."))
    body += _gates_section(log, metrics or {}, best)
    if not is_retrieval:  # a retrieval run has no probabilities to calibrate
        body += ["<h2>Calibration</h2>", *_calibration_section(run_dir)]
    body.append("<h2>Config</h2>")
    config = _text(run_dir / "config.yaml")
    body.append(note("config.yaml is missing.") if config is None else f"<pre>{escape(config)}</pre>")

    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    out = run_dir / "report.html"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)  # readers never see a half-written report
    return out
