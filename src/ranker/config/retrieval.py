"""The typed, strict configuration of a candidate-generation (retrieval) run.

A YAML file with ``kind: retrieval`` at the top is a :class:`RetrievalRunConfig`; ``ranker
train`` dispatches on that key. Sections: ``data`` (a retrieval recipe or an event file), ``model`` (``sasrec``
or ``hstu``), ``loss`` (``full_softmax``, ``sampled_softmax`` or ``in_batch``), ``train`` and
``eval``. Unknown keys are errors that name their path, as in the ranker's config.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ranker.config.events import EventFile, EventTimeSplit, LeaveOneOutSplit
from ranker.config.schema import BaseTrainConfig, Strict


class ItemAttributes(Strict):
    """Side information of the catalogue for the sequence model: a set of attribute tokens per
    item (brand, categories, genres, year...), embedded and averaged into the item's vector.

    Exactly one source: ``source`` names a built-in reader (``beauty``: S3-Rec's
    ``Beauty_item2attributes.json``; ``ml-1m`` / ``ml-100k``: genres and year of
    ``movies.dat`` / ``u.item``), ``path`` a JSON object of your own, ``{"raw item id":
    ["attribute", ...], ...}`` (S3-Rec's item2attributes format). Items the source does not
    list have no attributes (their vector is their id embedding alone).
    """

    source: Literal["beauty", "ml-1m", "ml-100k"] | None = Field(None, description="built-in reader")
    path: str | None = Field(None, description="JSON {raw item id: [attribute, ...]}")
    max_per_item: int = Field(16, ge=1, description="attributes kept per item (the first ones listed)")

    @model_validator(mode="after")
    def _one_source(self) -> ItemAttributes:
        if (self.source is None) == (self.path is None):
            raise ValueError("give exactly one of source (a built-in reader) or path (a JSON file)")
        return self


class RetrievalData(EventFile):
    """A built-in retrieval recipe (``dataset``) or your own event file (``path``): exactly one.

    Own data (keys of :class:`~ranker.config.events.EventFile`)::

        data:
          path: events.csv            # one row per interaction, any order
          user_column: user_id
          item_column: item_id
          time_column: ts             # optional: without it, file order is the order
          action_column: rating       # optional, with keep_actions: [...] or min_action: 4
          split: {kind: leave_one_out}   # or {kind: time, valid_start: T1, test_start: T2}
          min_user_events: 5          # optional k-core, repeated until stable
          min_item_events: 5
          max_len: 200
          item_attributes: {path: item_attributes.json}   # optional side information

    Events are ordered per user by (time, row in the file). ``leave_one_out`` is PROTOCOLS.md's
    (users with fewer than 3 events are dropped). A ``time`` split (see
    :class:`~ranker.config.events.EventTimeSplit`) trains on the train-period events; a user's
    validation target is their first valid-period event, their test target their first
    test-period event, each with every earlier event as input (users without such an event, or
    without any earlier event, have no target there). The catalogue is every item left after
    filtering; raw ids are mapped to indices by a vocabulary saved in the run directory
    (``items.parquet``) with every user's history (``histories.parquet``), so ``ranker
    retrieve`` takes and prints raw ids.
    """

    dataset: str | None = Field(None, description="built-in recipe, e.g. r-ml100k, r-ml1m, r-beauty")
    split: LeaveOneOutSplit | EventTimeSplit = Field(
        LeaveOneOutSplit(),
        discriminator="kind",
        description="leave_one_out (the built-ins' protocol) or time (own data only)",
    )
    min_user_events: int | None = Field(None, ge=1, description="k-core: users with fewer events are dropped")
    min_item_events: int | None = Field(None, ge=1, description="k-core: items with fewer events are dropped")
    max_len: int | None = Field(
        None, ge=2, description="model input length (default: the protocol's; 200 for own data)"
    )
    train_users: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of users whose training sequences train the model (a fixed "
        "random subset, the same for every seed; for data-scaling studies); validation and test "
        "always score every user",
    )
    train_holdout_last: int = Field(
        0,
        ge=0,
        description="train on each training sequence without its last K items, so the run's "
        "scores of those K positions are not fitted (the unfitted stage-2 rows of "
        "benchmarks/two_stage.py --unfitted); validation and test are unchanged",
    )

    item_attributes: ItemAttributes | None = Field(
        None,
        description="attribute tokens per item, averaged into the item embedding (input and output "
        "side); see ItemAttributes",
    )

    @model_validator(mode="after")
    def _source(self) -> RetrievalData:
        self._check_event_keys(self.dataset)
        if self.dataset is not None:
            if self.split.kind != "leave_one_out":
                raise ValueError(f"split: dataset {self.dataset!r} follows its protocol (leave_one_out)")
            for key in ("min_user_events", "min_item_events"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: only with `path`")
        elif self.split.kind == "time" and self.time_column is None:
            raise ValueError("split: a time split needs time_column")
        return self


class SASRecModel(Strict):
    """SASRec (Kang & McAuley, 2018): learned positions, causal softmax attention, FFN."""

    kind: Literal["sasrec"] = "sasrec"
    dim: int = Field(50, ge=1)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(1, ge=1)
    ff_dim: int = Field(50, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    l2_normalize: bool = Field(True, description="score cosine similarities (user and item)")

    @model_validator(mode="after")
    def _heads_divide(self) -> SASRecModel:
        if self.dim % self.num_heads:
            raise ValueError(
                f"num_heads {self.num_heads} does not divide dim {self.dim} (each head gets dim / num_heads)"
            )
        return self


class HSTUStack(Strict):
    """The stack of HSTU layers (Zhai et al., 2024; :mod:`ranker.nn.hstu`) that both sequence
    families build: SiLU attention with relative position/time bias, no FFN. Each family's
    ``model:`` section extends it, overriding the defaults that differ (and placing
    ``attention``, so that saved configs keep their key order)."""

    kind: Literal["hstu"] = "hstu"
    dim: int = Field(50, ge=1)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(1, ge=1)
    linear_dim: int = Field(50, ge=1, description="d_v per head (the reference ML-1M HSTU: 50)")
    attention_dim: int = Field(50, ge=1, description="d_qk per head (the reference ML-1M HSTU: 50)")
    dropout: float = Field(0.2, ge=0, lt=1, description="input and U⊙LN(AV) dropout")
    num_buckets: int = Field(128, ge=1)
    position_bias: bool = True
    time_bias: bool = True


class HSTUModel(HSTUStack):
    """HSTU for next-item retrieval, with the reference ML-1M model's defaults.

    ``time_bias`` needs a dataset with timestamps; ``query_time``: ``next`` = position i asks
    at the time of the event it predicts (the reference; at evaluation the target's time is
    the request time), ``last`` = at its own event's time (no later timestamp at all).
    ``position_embedding``: the reference also adds learned absolute positions to the input.
    """

    query_time: Literal["next", "last"] = "next"
    position_embedding: bool = True
    attention: Literal["reference", "fused"] = "reference"
    l2_normalize: bool = True


RetrievalModel = Annotated[SASRecModel | HSTUModel, Field(discriminator="kind")]


class FullSoftmax(Strict):
    """Cross-entropy over the whole catalogue (small catalogues)."""

    kind: Literal["full_softmax"] = "full_softmax"
    temperature: float = Field(0.05, gt=0)


class SampledSoftmax(Strict):
    """Softmax over the target and ``num_negatives`` uniform items.

    ``negatives_per``: who shares one draw of negatives. ``row`` draws for every target
    position, as the HSTU reference does (a (N, K, D) gather: ~20× the cost of the others
    on CPU); ``sequence`` draws once per training sequence, so a batch of B sequences sees
    B·K negatives (every item of a small catalogue, each step) at the cost of one shared set;
    ``batch`` draws one set for the whole step (cheapest, fewest distinct negatives).
    Negatives equal to a row's target (accidental hits) are removed from that row.
    """

    kind: Literal["sampled_softmax"] = "sampled_softmax"
    num_negatives: int = Field(128, ge=1)
    temperature: float = Field(0.05, gt=0)
    negatives_per: Literal["row", "sequence", "batch"] = "sequence"


class InBatchSoftmax(Strict):
    """Negatives = the other targets of the batch; ``log_q``: subtract log popularity
    (Yi et al., RecSys 2019), since in-batch items are drawn by popularity."""

    kind: Literal["in_batch"] = "in_batch"
    temperature: float = Field(0.05, gt=0)
    log_q: bool = True


RetrievalLoss = Annotated[FullSoftmax | SampledSoftmax | InBatchSoftmax, Field(discriminator="kind")]


class SequenceTrainConfig(BaseTrainConfig):
    """Next-item targets at every position, users per step; selection on validation NDCG@10."""

    epochs: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=1, description="users per step")
    eval_batch_size: int = Field(128, ge=1, description="users per scoring batch")
    clip_grad_norm: float | None = Field(None, gt=0, description="max global gradient norm")
    patience: int = Field(20, ge=0, description="evaluations without gain before stopping")
    length_window: int = Field(4, ge=0, description="sort users by length within windows of this many batches (0: off)")
    protocol: Literal["select_on_valid", "reference", "refit"] = Field(
        "select_on_valid",
        description="select_on_valid: the validation item is held out and picks the epoch; "
        "reference (the HSTU public code's): it is a training target too, all `epochs` run, "
        "the test is reported at the last epoch (validation metrics are then leaked); "
        "refit: the same training, for the epochs a select_on_valid run picked (`ranker refit`)",
    )
    refit_of: str | None = Field(
        None, description="protocol refit: the select_on_valid run whose config and best epoch this repeats"
    )

    @model_validator(mode="after")
    def _refit_of_needs_refit(self) -> SequenceTrainConfig:
        if self.refit_of is not None and self.protocol != "refit":
            raise ValueError(f"refit_of: only with protocol 'refit', got protocol {self.protocol!r}")
        return self

    @property
    def trains_on_valid(self) -> bool:
        """The validation item is a training target (``reference`` and ``refit``)."""
        return self.protocol != "select_on_valid"


class RetrievalEval(Strict):
    """Full-catalogue leave-one-out metrics (PROTOCOLS.md); sampled ones only on request.

    ``exclude``: ``history`` (every earlier item, the protocol) or ``input`` (only the items of
    the truncated model input, the HSTU reference's variant). ``sampled_negatives``: also report
    metrics against that many uniform non-history negatives, under keys ``sampled<N>/...``.
    """

    ks: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [10, 50, 200])
    exclude: Literal["history", "input"] = "history"
    sampled_negatives: int | None = Field(None, ge=1)

    @field_validator("ks")
    @classmethod
    def _has_10(cls, ks: list[int]) -> list[int]:
        if 10 not in ks:
            raise ValueError(f"must contain 10 (model selection uses NDCG@10), got {ks}")
        return ks


class RetrievalRunConfig(Strict):
    """The whole YAML file of a retrieval run."""

    kind: Literal["retrieval"]
    name: str = "retrieval"
    data: RetrievalData
    model: RetrievalModel = HSTUModel()
    loss: RetrievalLoss = SampledSoftmax()
    train: SequenceTrainConfig = SequenceTrainConfig()
    eval: RetrievalEval = RetrievalEval()
