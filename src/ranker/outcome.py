"""What a finished run says when it has no number to give: reasons for undefined metrics and the
verdict "trained, but not usable" (the CLI's exit status 3).

``metrics.json`` is strict JSON: a metric that is not a number (the AUC of a split with one
class, the RMSE of a task with no rows) is written as ``null``, and the top-level
``undefined`` object says why, keyed by the value's path (keys joined by ``/``)::

    "test": {"buy": {"auc": null, "rows": 52.0, "positive_rate": 0.0, ...}},
    "undefined": {"test/buy/auc": "one class in the test split: all 52 rows are 0"}

A run is *usable* when its weights were selected on a validation score that is a number
(:meth:`ranker.train.engine.FitResult.problem`); otherwise ``metrics.json`` has ``"usable":
false`` and ``"unusable": "<what happened; what to check>"``, the run directory is still
complete, and ``ranker train`` exits with :data:`UNUSABLE_EXIT`. ``"beats_untrained": false``
(no trained epoch beat the untrained weights on validation) is a ``warnings`` entry and a
``warning:`` line; ``ranker train --strict`` makes it exit :data:`UNUSABLE_EXIT` too.
"""

from __future__ import annotations

import math
from typing import Any

#: Exit status of a command that trained and wrote its run directory, but whose result is not
#: usable (2 is a user error before work, 1 a bug).
UNUSABLE_EXIT = 3

_SPLIT_OF = {"train": "train", "valid": "valid", "test": "test", "untrained_valid": "valid"}
_CLASS_METRICS = ("auc", "gauc", "logloss", "accuracy")


def undefined_reasons(metrics: dict[str, Any]) -> dict[str, str]:
    """``{path: reason}`` for every value of `metrics` that is None or a non-finite float.

    A per-task metric finds its reason in the task's own ``rows`` / ``positive_rate`` on the
    same split (also for the baseline's, the serving score's and the untrained weights' entries).

    >>> m = {"test": {"buy": {"auc": float("nan"), "rows": 52.0, "positive_rate": 0.0}}}
    >>> undefined_reasons(m)
    {'test/buy/auc': 'one class in the test split: all 52 rows are 0'}
    >>> undefined_reasons({"untrained_valid_score": None})["untrained_valid_score"][:12]
    'not measured'
    """
    out: dict[str, str] = {}
    _walk(metrics, (), metrics, out)
    return out


def _walk(obj: Any, path: tuple[str, ...], root: dict[str, Any], out: dict[str, str]) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key != "undefined":
                _walk(value, (*path, str(key)), root, out)
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            _walk(value, (*path, str(i)), root, out)
    elif obj is None or (isinstance(obj, float) and not math.isfinite(obj)):
        out["/".join(path)] = _reason(path, root)


def _reason(path: tuple[str, ...], root: dict[str, Any]) -> str:
    """Why the value at `path` is not a number (a generic sentence when nothing is known)."""
    if path == ("best_epoch",):
        return "no validation score was a number, so no epoch could be selected; the weights are the last epoch's"
    if path == ("beats_untrained",):
        return "the untrained weights' or the selected epoch's validation score is not a number (or unknown)"
    if path == ("untrained_valid_score",) and "untrained_valid" not in root:
        return "not measured: the run resumed a checkpoint written before untrained weights were validated"
    if path and path[-1].endswith("valid_score"):
        return "the selection score is not a number: none of the validation metrics it averages is defined"
    if path and path[-1].split("/")[-1].startswith(("HR@", "NDCG@", "MRR")):  # retrieval: flat per split
        split = next((_SPLIT_OF[p] for p in reversed(path[:-1]) if p in _SPLIT_OF), None)
        if split is not None:
            return f"no {split} queries to rank"
    split = next((_SPLIT_OF[p] for p in reversed(path[:-2]) if p in _SPLIT_OF), None)
    if split is not None:
        task, metric = path[-2], path[-1]
        own = root.get(split, {}).get(task) if isinstance(root.get(split), dict) else None
        reason = _task_reason(split, metric, own) if isinstance(own, dict) else None
        if reason:
            return reason
    return "not a finite number (NaN or infinite)"


def _task_reason(split: str, metric: str, task: dict[str, Any]) -> str | None:
    rows, rate = task.get("rows"), task.get("positive_rate")
    if isinstance(rows, int | float) and rows == 0:
        return f"no rows in the {split} split: the task's mask_column hides every row, or the split is empty"
    if metric in _CLASS_METRICS and isinstance(rate, int | float) and rate in (0.0, 1.0):
        return f"one class in the {split} split: all {rows:.0f} rows are {rate:.0f}"
    if metric == "gauc":
        return f"no group (group_column) in the {split} split has both classes"
    return None


def summary(reasons: dict[str, str], limit: int = 3) -> str:
    """One line naming the first `limit` undefined values and their reasons (the model's own
    valid / test metrics first).

    >>> summary({"baseline/test/a/auc": "one class", "test/a/auc": "one class"}, limit=1)
    'test/a/auc (one class) and 1 more'
    """
    first = sorted(reasons, key=lambda path: path.split("/")[0] not in ("valid", "test"))
    shown = [f"{path} ({reasons[path]})" for path in first[:limit]]
    more = len(reasons) - len(shown)
    return "; ".join(shown) + (f" and {more} more" if more else "")
