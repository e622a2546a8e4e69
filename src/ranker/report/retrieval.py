"""The retrieval family's report sections: the results table (the model beside the most-popular
baseline on the same valid and test queries) and validation HR@k / NDCG@k per epoch, as a plot
and a table.

A retrieval run's metrics are flat (``{"HR@10": …, "NDCG@10": …, "MRR": …}``), not per task;
``metrics.json`` holds ``most_popular.{valid,test}`` and ``untrained_valid`` (the weights before
training, drawn as epoch 0).
"""

from __future__ import annotations

import math
import re
from typing import Any

from ranker.report import plots
from ranker.report.format import img, note, num, table

_CUTOFF = re.compile(r"^(HR|NDCG)@(\d+)$")


def flat_metrics(obj: Any) -> dict[str, Any]:
    """The ``HR@k`` / ``NDCG@k`` / ``MRR`` entries of a flat metrics dict (empty otherwise)."""
    if not isinstance(obj, dict):
        return {}
    return {k: v for k, v in obj.items() if _CUTOFF.match(str(k)) or k == "MRR"}


def is_retrieval(metrics: dict[str, Any], log: list[dict[str, Any]]) -> bool:
    """Whether the run's metrics (or, without them, its log) are retrieval metrics."""
    if metrics:
        return bool(flat_metrics(metrics.get("test")) or flat_metrics(metrics.get("valid")))
    return any(flat_metrics(r.get("valid")) for r in log)


def _names(*dicts: Any) -> list[str]:
    """Metric names in the order HR@k1, NDCG@k1, …, MRR, over all given dicts."""
    seen = list(dict.fromkeys(k for d in dicts for k in flat_metrics(d)))
    return sorted(seen, key=lambda k: (k == "MRR", int(m.group(2)) if (m := _CUTOFF.match(k)) else 0, k))


def results(metrics: dict[str, Any]) -> list[str]:
    """Model vs most-popular on valid and test, one row per metric."""
    popular: dict[str, Any] = metrics["most_popular"] if isinstance(metrics.get("most_popular"), dict) else {}
    splits = [s for s in ("valid", "test") if flat_metrics(metrics.get(s))]
    if not splits:
        return [note("metrics.json has no retrieval metrics (HR@k, NDCG@k, MRR) for valid or test.")]
    header = ["metric"]
    for s in splits:
        header += [f"{s}: model", f"{s}: most-popular", f"{s}: Δ"]
    rows = []
    for name in _names(*(metrics.get(s) for s in splits)):
        row: list[Any] = [name]
        for s in splits:
            model, base = metrics[s].get(name), (popular.get(s) or {}).get(name)
            row += [model, base, num(model) - num(base)]
        rows.append(row)
    return [
        table(header, rows),
        note(
            "Full catalogue, history excluded. Most-popular ranks items by their count in the training "
            "sequences, on the same queries (Δ = model − most-popular)."
        ),
    ]


def curves(log: list[dict[str, Any]], metrics: dict[str, Any], best: int | None) -> list[str]:
    """Validation HR@k and NDCG@k per epoch (epoch 0: untrained weights) beside most-popular."""
    start = flat_metrics(metrics.get("untrained_valid"))
    records: list[tuple[float, dict[str, Any], dict[str, Any] | None]] = [(0.0, start, None)] if start else []
    records += [(num(r.get("epoch", i + 1)), flat_metrics(r.get("valid")), r) for i, r in enumerate(log)]
    records = [(e, v, r) for e, v, r in records if v]
    if not records:
        return [note("log.jsonl has no validation HR@k / NDCG@k.")]
    names = _names(*(v for _, v, _ in records))
    popular = flat_metrics((metrics.get("most_popular") or {}).get("valid"))
    epochs = [e for e, _, _ in records]
    series = {
        panel: {n: [num(v.get(n)) for _, v, _ in records] for n in names if n.startswith(panel + "@")}
        for panel in ("HR", "NDCG")
    }
    series = {p: s for p, s in series.items() if s}
    out = []
    if series:
        png = plots.plot_retrieval_curves(epochs, series, {k: num(v) for k, v in popular.items()}, best)
        out.append(img(png, "validation HR@k and NDCG@k per epoch vs most-popular"))
    rows = []
    for epoch, valid, record in records:
        loss = record.get("train_loss") if record else None
        label: Any = "0 (untrained)" if record is None else (int(epoch) if math.isfinite(epoch) else "?")
        rows.append([label, loss, *(valid.get(n) for n in names)])
    if popular:
        rows.append(["most-popular", None, *(popular.get(n) for n in names)])
    out.append(table(["epoch", "train loss", *names], rows))
    return out
