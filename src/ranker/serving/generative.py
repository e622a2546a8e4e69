"""The generative (HSTU) ranker as a bundle's stage 2: the store's events → tokens → M-FALCON scores.

A generative ranking run (``kind: generative``, :mod:`ranker.generative.run`) scores an item by
reading the user's interleaved sequence ``[s_1 … s_S] i_0 a_0 … i_{m−1} a_{m−1}`` (Zhai et al.,
ICML 2024, §2.2). At request time the sequence is built from the user's events in the store
(items, actions, times) and the stage-1 candidates are scored with the run's cached path,
:meth:`~ranker.models.generative.GenerativeRanker.score_candidates` (M-FALCON, §3.4): the history
is encoded once and its per-layer keys and values kept; every candidate attends to them and to
itself, never to another candidate, so C candidates cost one history pass plus O(C·N)
attention rows. A candidate sits where the item token of the user's next event would sit (the
position after the history, the request time), so a served score is the score the run's own
evaluation gives that item after the same events (tested to 1e-5).

Raw values → the run's ids (its ``items.parquet`` and ``actions.parquet``):

- **items**: an item outside the run's vocabulary (in the history or among the candidates)
  becomes a token with item id 0, the item table's padding row (a zero embedding): its kind,
  position, time and action still count, its identity does not. Bundling refuses a run whose
  items do not mostly fit the retrieval catalogue (``--min-item-overlap``).
- **actions**: the store's action text is looked up among the run's action values (text:
  rating ``4`` and ``"4"`` are the same action). An action the run does not know (a value not
  seen in its train events, or an event stored without action) never fails a request: it gets
  the id the run gave such values in training (``A + 1``, present when its data had unseen
  values), else 0, the padding row (no action embedding; the token still marks "an event
  happened"). ``/health`` and the bundle's ``generative.json`` list the known actions.
- **static tokens**: the user's static feature ids as the run computed them, read from the
  run's data once at ``ranker bundle`` (``static.parquet``); a user the run never saw (or a
  request without a user) gets each feature's "unseen" id, the one users absent from the
  run's train events had.

The request's ``context`` is not read (the run's tokens carry ids only). History: the user's
last ``max_events − 1`` events (a training window holds ``max_events``
events, so a scored item there reads at most ``max_events − 1`` earlier ones); the static
tokens take the time of the first of them (the request time without history), as in training
windows. Events at or after the request second are kept in the sequence but, by the mask,
unseen by the candidates (:mod:`ranker.nn.interleave`).

Bundle files of this stage (written by :func:`write_generative`)::

    generative/            the run's config.yaml, model.safetensors, model_shape.json,
                           items.parquet, actions.parquet: loads with ranker.generative.run.load_run
    static.parquet         `user` raw id, `static` list<int64>: every user of the run's data
    generative.json        tasks, action values, the unseen static ids
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ranker.config.schema import TaskConfig
from ranker.errors import ConfigError
from ranker.nn.interleave import ACTION, ITEM, STATIC
from ranker.run_manifest import seal_run
from ranker.serving.bundle import BundleError, check_fusion, check_ids_fit
from ranker.serving.store import Event, raw_id
from ranker.tasks import TaskSpec, serving_score

RUN_FILES = ("config.yaml", "model.safetensors", "model_shape.json", "items.parquet", "actions.parquet")


@dataclass
class GenerativeStage:
    """A loaded generative ranker and the raw → id maps of its run."""

    cfg: Any  # GenerativeRunConfig
    model: Any  # GenerativeRanker in eval mode
    spec: TaskSpec
    item_ids: dict[str, int]  # raw item id → 1..I
    action_ids: dict[str, int]  # action text → 1..A
    unknown_action: int  # A + 1 when the run has an "unseen" action id, else 0
    static: dict[str, list[int]]  # raw user id → static token ids (S,)
    unseen_static: list[int]  # (S,)

    @property
    def max_history(self) -> int:
        """Events read per request: ``max_events − 1`` (see the module docstring)."""
        return int(self.cfg.data.max_events) - 1

    def action_id(self, action: str | None) -> int:
        return self.unknown_action if action is None else self.action_ids.get(action, self.unknown_action)

    def history_tokens(self, user: str | None, events: list[Event], now: float) -> Any:
        """One sequence (1, S + 2m) of static, item and action tokens (a ``Tokens``, no scores)."""
        from ranker.models.generative import Tokens

        recent = events[-self.max_history :]
        static = self.static.get(user, self.unseen_static) if user is not None else self.unseen_static
        s, m = len(static), len(recent)
        pairs = [(self.item_ids.get(e.item, 0), self.action_id(e.action)) for e in recent]
        times = [int(e.time) for e in recent]
        first = times[0] if recent else int(now)
        kind = [STATIC] * s + [ITEM, ACTION] * m
        ids = static + [i for pair in pairs for i in pair]
        event = [-1] * s + [e for e in range(m) for _ in (0, 1)]
        time = [first] * s + [t for t in times for _ in (0, 1)]

        def row(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long).view(1, -1)

        return Tokens(
            row(kind), row(ids), row(event), row(time), row(list(range(s + 2 * m))), torch.zeros(0, dtype=torch.long)
        )

    @torch.inference_mode()
    def score(
        self, user: str | None, events: list[Event], items: list[str], now: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Task outputs (C, T) (probabilities for binary tasks) and serving scores (C,) of `items`."""
        history = self.history_tokens(user, events, now)
        cand = torch.tensor([self.item_ids.get(i, 0) for i in items], dtype=torch.long)
        probs = self.spec.outputs(self.model.score_candidates(history, cand, time=int(now)).float())
        scores = serving_score(probs, self.spec, self.cfg.serving.weights, self.cfg.serving.combine)
        return probs.numpy(), scores.numpy()


# ---------------------------------------------------------------------- write


def check_generative(run: Path, items: pa.Array, catalogue_file: Path, min_overlap: float) -> None:
    """Refuse a generative run that cannot be bundled with this catalogue (files, item ids)."""
    for name in RUN_FILES:
        if not (run / name).is_file():
            raise ConfigError(
                f"--ranker {run}: no {name} (a generative run written before raw ids and model shapes "
                "were kept in the run directory; train it again)"
            )
    check_ids_fit(_vocab(run / "items.parquet", "item"), run / "items.parquet", items, catalogue_file, min_overlap)


def _run_and_data(run: Path) -> tuple[Any, Any, Any]:
    """(config, model, event log) of a finished generative run; its data must be the one it
    trained on (the static tokens are rebuilt from it)."""
    from ranker.generative.run import load_events, load_run

    cfg, model = load_run(run)
    log = load_events(cfg)
    assert log.vocab is not None  # every event log read from a declared file has one
    for name, values in (("items", log.vocab["items"]), ("users", log.vocab["users"])):
        kept = pq.read_table(run / f"{name}.parquet").column(0).combine_chunks()
        if not kept.equals(values):
            raise ConfigError(
                f"--ranker {run}: {name}.parquet differs from the {name} of its data {cfg.data.path or cfg.data.dataset} "
                "(the data changed after training): the static tokens cannot be rebuilt"
            )
    return cfg, model, log


def stage_of_run(run: Path) -> GenerativeStage:
    """The stage straight from a finished run directory and its data (no bundle): what a
    bundle of it would serve, for offline scoring through the served path."""
    cfg, model, log = _run_and_data(run)
    actions = [str(a) for a in pq.read_table(run / "actions.parquet").column(0).to_pylist()]
    users = [raw_id(u) for u in log.vocab["users"].to_pylist()]
    return GenerativeStage(
        cfg=cfg,
        model=model,
        spec=TaskSpec.from_tasks(list(log.tasks)),
        item_ids={raw_id(v): k + 1 for k, v in enumerate(log.vocab["items"].to_pylist())},
        action_ids={a: k + 1 for k, a in enumerate(actions)},
        unknown_action=len(actions) + 1 if log.num_actions > len(actions) else 0,
        static=dict(zip(users, log.static[1:].tolist(), strict=True)),
        unseen_static=unseen_static_ids(log.static, log.user[log.split == 0]),
    )


def write_generative(run: Path, tmp: Path, fused: bool = False) -> dict[str, Any]:
    """Copy the run into ``tmp/generative``; write ``static.parquet`` and ``generative.json``
    from the run's data (read once, here); the manifest's stage entry. `fused`: the bundle
    fuses the serving score with the stage-1 score, which needs a probability."""
    from ranker.tasks.score import score_weights

    cfg, _, log = _run_and_data(run)
    spec = TaskSpec.from_tasks(list(log.tasks))
    score_weights(spec, cfg.serving.weights)  # an unknown task name in serving.weights fails here
    if fused:
        check_fusion(spec, cfg.serving, run)
    dest = tmp / "generative"
    dest.mkdir()
    for name in RUN_FILES:
        shutil.copyfile(run / name, dest / name)
    seal_run(dest, "generative")
    users = pa.array([raw_id(u) for u in log.vocab["users"].to_pylist()], pa.string())
    static = pa.array(log.static[1:].tolist(), pa.list_(pa.int64()))
    pq.write_table(pa.table({"user": users, "static": static}), tmp / "static.parquet")
    info = {
        "tasks": [t.model_dump(exclude_defaults=True) for t in log.tasks],
        "actions": pq.read_table(run / "actions.parquet").column(0).to_pylist(),
        "static_features": list(cfg.data.static_features),
        "unseen_static": unseen_static_ids(log.static, log.user[log.split == 0]),
    }
    (tmp / "generative.json").write_text(json.dumps(info, indent=2))
    return {"kind": "generative", "run": str(run.resolve()), "tasks": [t.name for t in log.tasks]}


def unseen_static_ids(static: np.ndarray, train_users: np.ndarray) -> list[int]:
    """(S,) each static feature's "unseen" id, ``1 + off_f`` (:func:`ranker.generative.events.static_ids`).

    Feature f's ids are ``1 + off_f + {0 unseen, 1..K_f the values of train users}`` and
    ``off_{f+1} = off_f + K_f + 1``; the largest id of feature f among train users is the
    K_f-th value's, so the next feature's unseen id is that plus one (the first feature's is 1).

    >>> from ranker.generative.events import static_ids
    >>> cols = {"a": np.array(["", "x", "y", "z"]), "b": np.array(["", "p", "p", "q"])}
    >>> ids, _ = static_ids(cols, np.array([False, True, True, False]))  # user 3 not in train
    >>> unseen_static_ids(ids, np.array([1, 2])), ids[3].tolist()
    ([1, 4], [1, 4])
    """
    if static.shape[1] == 0:
        return []
    top = static[np.unique(train_users)].max(0)  # (S,)
    return [1, *(int(v) + 1 for v in top[:-1])]


# ---------------------------------------------------------------------- load


def load_generative(path: Path, items: pa.Array, min_overlap: float) -> GenerativeStage:
    """The stage from a verified bundle directory (its item ids checked against the catalogue)."""
    from ranker.generative.run import load_run

    run = path / "generative"
    vocab = _vocab(run / "items.parquet", "item")
    check_ids_fit(vocab, run / "items.parquet", items, path / "retrieval" / "items.parquet", min_overlap)
    cfg, model = load_run(run, verify=False)  # the bundle's manifest covered its files
    info = json.loads((path / "generative.json").read_text())
    actions = [str(a) for a in info["actions"]]
    num_actions = int(json.loads((run / "model_shape.json").read_text())["num_actions"])
    static = pq.read_table(path / "static.parquet")
    users = static.column("user").to_pylist()
    ids = static.column("static").to_pylist()
    return GenerativeStage(
        cfg=cfg,
        model=model,
        spec=TaskSpec.from_tasks([TaskConfig(**t) for t in info["tasks"]]),
        item_ids={raw_id(v): k + 1 for k, v in enumerate(vocab.to_pylist())},
        action_ids={a: k + 1 for k, a in enumerate(actions)},
        unknown_action=len(actions) + 1 if num_actions > len(actions) else 0,
        static=dict(zip(users, ids, strict=True)),
        unseen_static=[int(v) for v in info["unseen_static"]],
    )


def _vocab(path: Path, column: str) -> pa.Array:
    table = pq.read_table(path)
    if column not in table.column_names:
        raise BundleError(f"{path}: no {column!r} column (not a generative run's vocabulary)")
    return table.column(column).combine_chunks()
