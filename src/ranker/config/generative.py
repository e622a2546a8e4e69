"""The typed, strict configuration of a generative ranking run (HSTU over item/action tokens).

A YAML file with ``kind: generative`` at the top is a :class:`GenerativeRunConfig`; ``ranker
train`` dispatches on that key. Sections: ``data`` (``rk-ml100k``, the ranking recipe with
per-event negatives, or an event file of your own), ``model`` (the HSTU stack and the static
user tokens) and ``train``.
Unknown keys are errors that name their path, as in the ranker's config.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ranker.config.events import EventFile, EventTimeSplit, LastNSplit
from ranker.config.retrieval import HSTUStack
from ranker.config.schema import BaseTrainConfig, CsvOptions, ServingConfig, Strict, TaskConfig, Width, _check_tasks

StaticFeature = Literal["user_id", "gender", "occupation", "zip1", "age"]
STATIC_FEATURES: list[StaticFeature] = ["user_id", "gender", "occupation", "zip1", "age"]


class SampledNegatives(Strict):
    """Per event, ``per_event`` negatives drawn once (``default_rng(seed)``) with probability ∝
    train popularity^``power`` among items the user has no event with up to that event (as
    RK-ML100K's). A negative is scored at its event's place; its label is 0 for every task, and
    it is masked for tasks with a ``mask_column`` (defined on engaged rows only)."""

    per_event: int = Field(4, ge=1)
    seed: int = 2021
    power: float = Field(0.75, ge=0)


class NegativesFile(Strict):
    """Negatives of chosen events from a file of your own: one row per (event, negative item).

    An event is named by its user and ``position_column``: the event's 0-based index among the
    user's events in time order (ties by file row, after the action filter), the order the
    splits use. A listed event scores its file negatives after its sampled ones (``negatives``),
    in file order, in ``per_event`` slots; an event with fewer leaves the rest empty (masked).
    Label 0 for every task; masked for tasks with a ``mask_column``, as sampled ones. Use it for
    the items a previous stage showed or proposed at that moment (impressions, a candidate
    generator's top N: "hard" negatives). ``only_listed``: the train split trains on the listed
    events only; the others stay in the sequences as context (valid and test score every event).
    """

    path: str
    format: Literal["auto", "csv", "parquet"] = "auto"
    csv: CsvOptions = CsvOptions()
    user_column: str | None = Field(None, description="user id column (default: data.user_column)")
    item_column: str | None = Field(None, description="negative item id column (default: data.item_column)")
    position_column: str = Field("position", description="the event's 0-based index in the user's time order")
    per_event: int = Field(..., ge=1, description="slots for file negatives per event (more listed: an error)")
    only_listed: bool = Field(False, description="train on the listed train events only")


class UserTable(Strict):
    """A file of per-user columns for ``static_features``, keyed by the user id column."""

    path: str
    format: Literal["auto", "csv", "parquet"] = "auto"
    csv: CsvOptions = CsvOptions()
    user_column: str | None = Field(None, description="id column (default: data.user_column)")


class GenerativeData(EventFile):
    """The built-in RK-ML100K (``dataset``) or your own event file (``path``): exactly one.

    Own data (keys of :class:`~ranker.config.events.EventFile` plus the ones below)::

        data:
          path: events.parquet
          user_column: user_id
          item_column: item_id
          time_column: ts               # required: events are ordered by (time, row)
          action_column: event_type     # required: its values become the action tokens
          tasks:                        # labels from columns, as the feature ranker's tasks
            - {name: click, column: clicked}
            - {name: like, column: liked, mask_column: clicked}
          negatives: {per_event: 4}     # optional sampled negatives (else: each row is scored
                                        # alone; impressions are rows whose labels are 0)
          negatives_file: {path: shown.parquet, per_event: 8}   # optional negatives per event
          static_features: [user_id, country]   # the user id column, or columns of user_table
          user_table: {path: users.csv}         # (else: event-file columns constant per user)
          split: {kind: time, fractions: [0.8, 0.1, 0.1]}   # or {kind: last_n, valid: 1, test: 1}

    Every row is one event: its item token, its action token (the action column's value; the
    values seen in train events get ids in sorted order, any other value one shared "unseen"
    id) and its scored row(s). Raw ids map to indices by sorted vocabularies (kept in the run
    directory as ``items.parquet`` / ``users.parquet``). Splits: see
    :class:`~ranker.config.events.EventTimeSplit` and :class:`~ranker.config.events.LastNSplit`.
    """

    dataset: Literal["rk-ml100k"] | None = Field(None, description="the built-in RK-ML100K")
    max_events: int = Field(
        128,
        ge=2,
        description="events per model input; longer users are cut into windows "
        "whose targets keep at least max_events/2 earlier events as context",
    )
    static_features: list[str] = Field(
        default_factory=list,
        description="leading user tokens, one per feature; rk-ml100k: any of user_id, gender, "
        "occupation, zip1, age (a decade), all by default; own data: the user id column or "
        "columns of user_table (else of the event file, constant per user), none by default",
    )
    tasks: list[TaskConfig] = Field(default_factory=list, description="own data: labels from columns")
    negatives: SampledNegatives | None = Field(None, description="own data: sampled negatives")
    negatives_file: NegativesFile | None = Field(None, description="own data: negatives of chosen events")
    user_table: UserTable | None = Field(None, description="own data: per-user static columns")
    split: EventTimeSplit | LastNSplit | None = Field(
        None, discriminator="kind", description="own data: time or last_n"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_static(cls, values: Any) -> Any:
        if isinstance(values, dict) and "static_features" not in values and values.get("path") is None:
            values = {**values, "static_features": list(STATIC_FEATURES)}
        return values

    @model_validator(mode="after")
    def _source(self) -> GenerativeData:
        self._check_event_keys(self.dataset)
        own = ("tasks", "negatives", "negatives_file", "user_table", "split")
        if self.dataset is not None:
            given = [k for k in own if getattr(self, k)]
            if given:
                raise ValueError(f"{', '.join(given)}: only with `path` (rk-ml100k follows its protocol)")
            bad = [(i, f) for i, f in enumerate(self.static_features) if f not in STATIC_FEATURES]
            if bad:
                raise ValueError(
                    f"static_features.{bad[0][0]}: {bad[0][1]!r} is not a feature of "
                    f"rk-ml100k; allowed: {', '.join(STATIC_FEATURES)}"
                )
            return self
        missing = [k for k in ("time_column", "action_column", "tasks", "split") if not getattr(self, k)]
        if missing:
            raise ValueError(f"with `path`, give {', '.join(missing)}")
        _check_tasks(self.tasks)
        return self


class GenerativeModel(HSTUStack):
    """HSTU (Zhai et al., 2024) over ``[static] i0 a0 i1 a1 …`` plus candidate tokens."""

    dim: int = Field(64, ge=1)
    num_heads: int = Field(2, ge=1)
    linear_dim: int = Field(32, ge=1, description="d_v per head")
    attention_dim: int = Field(32, ge=1, description="d_qk per head")
    attention: Literal["reference", "fused"] = "fused"
    tower_hidden: list[Width] = Field(default_factory=list, description="per-task MLP before the logit")


class GenerativeTrainConfig(BaseTrainConfig):
    """Every event (and its negatives) of each user window, batches budgeted in attention
    cells; selection on the validation mean AUC of the tasks, as the feature ranker."""

    epochs: int = Field(30, ge=1)
    batch_cells: int = Field(
        2_000_000, ge=1, description="attention cells B·N² per batch (sequences of similar length)"
    )
    max_batch_size: int = Field(64, ge=1, description="sequences per batch at most")
    clip_grad_norm: float | None = Field(1.0, gt=0, description="max global gradient norm")


class GenerativeRunConfig(Strict):
    """The whole YAML file of a generative ranking run."""

    kind: Literal["generative"]
    name: str = "generative"
    data: GenerativeData
    model: GenerativeModel = GenerativeModel()
    train: GenerativeTrainConfig = GenerativeTrainConfig()
    serving: ServingConfig = Field(
        default_factory=ServingConfig, description="the score a bundle's /recommend sorts by (as the feature ranker's)"
    )
