"""The typed, strict configuration of a ranker run.

Every section is a pydantic v2 model with ``extra="forbid"``: an unknown or misspelled key is an
error that names its path (see :mod:`ranker.config.load`). Swappable parts (feature encoders,
interaction block, backbone, task heads, history encoder) are discriminated unions keyed by
``kind``; a later capability adds a new ``kind`` here and a builder in
:mod:`ranker.models.registry`, and the trainer never changes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

Transform = Literal["standard", "log1p", "cdf", "sigmoid", "bins"]  # of a numerical feature
Norm = Literal["none", "batch", "layer"]  # of the backbones (ranker.nn.mlp.make_norm)
Activation = Literal["relu", "gelu", "silu"]  # of backbones, experts, towers (ranker.nn.mlp.ACTIVATIONS)


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- data: features


class CategoricalFeature(Strict):
    """One id per row (user id, item id, country...). Values are strings or integers."""

    kind: Literal["categorical"]
    name: str
    column: str | None = Field(None, description="source column; defaults to `name`")
    min_count: int = Field(1, ge=1, description="train values seen fewer times map to OOV")
    vocab_from: str | None = Field(None, description="share the vocabulary of another feature")


class MultiCategoricalFeature(Strict):
    """A bag of ids per row (genres, tags): a list column, or a string split by `separator`."""

    kind: Literal["multi_categorical"]
    name: str
    column: str | None = None
    separator: str = "|"
    max_len: int = Field(16, ge=1, description="values kept per row (the first ones)")
    min_count: int = Field(1, ge=1)
    vocab_from: str | None = None


class NumericalFeature(Strict):
    """A scalar. NaN/None become 0 plus a 0/1 missing indicator; ±inf become ±clip.

    Transforms (fitted on train, see :mod:`ranker.data.numeric`): ``standard``, ``log1p``
    (signed, then standard), ``cdf`` (empirical CDF), ``sigmoid`` (σ(a·x+b), a and b from the
    train median and IQR), ``bins`` (the quantile-bin id becomes a categorical feature).
    """

    kind: Literal["numerical"]
    name: str
    column: str | None = None
    transform: Transform = "standard"
    clip: float = Field(5.0, gt=0, description="standardised values are clipped to ±clip")
    n_bins: int = Field(16, ge=1, description="quantile bins of transform: bins")


class DenseFeature(Strict):
    """A fixed-length float vector per row (e.g. a content embedding from another network)."""

    kind: Literal["dense"]
    name: str
    column: str | None = None
    dim: int = Field(..., ge=1)


class HistoryFeature(Strict):
    """The user's past events: list columns of item ids, action types and seconds-before.

    The item ids share the vocabulary of the categorical feature named by `item_feature`,
    so a history event and the candidate go through the same embedding.
    """

    kind: Literal["history"]
    name: str
    item_column: str
    item_feature: str = Field(..., description="categorical feature whose vocabulary items use")
    action_column: str | None = None
    time_column: str | None = Field(None, description="seconds between event and the example")
    max_len: int = Field(50, ge=1, description="most recent events kept")


Feature = Annotated[
    CategoricalFeature | MultiCategoricalFeature | NumericalFeature | DenseFeature | HistoryFeature,
    Field(discriminator="kind"),
]


class TaskConfig(Strict):
    """A prediction target, optionally defined only where `mask_column` is 1.

    ``binary``: a 0/1 label, BCE loss, output σ(logit). ``regression``: a real label, ``mse`` or
    ``huber`` loss (δ = `huber_delta`), output the raw value. ``conditional_on: watch`` makes the
    head predict p(task | watch = 1) and trains it ESMM-style through p(task ∧ watch) =
    p(watch) · p(task | watch) on every row where `watch` is defined (see
    :mod:`ranker.tasks.chain`); it must name an earlier binary task.
    """

    name: str
    column: str | None = None
    kind: Literal["binary", "regression"] = "binary"
    loss: Literal["bce", "mse", "huber"] | None = Field(
        None, description="bce for binary, mse (or huber) for regression"
    )
    huber_delta: float = Field(1.0, gt=0)
    weight: float = Field(1.0, ge=0)
    mask_column: str | None = Field(None, description="rows where this column is 0 are ignored")
    conditional_on: str | None = Field(None, description="ESMM chain: an earlier binary task")

    @model_validator(mode="after")
    def _loss_fits_kind(self) -> TaskConfig:
        if self.kind == "binary" and self.loss not in (None, "bce"):
            raise ValueError(f"task {self.name!r}: loss {self.loss!r} needs kind: regression")
        if self.kind == "regression" and self.loss == "bce":
            raise ValueError(f"task {self.name!r}: loss bce needs kind: binary")
        if self.kind == "regression" and self.conditional_on is not None:
            raise ValueError(f"task {self.name!r}: conditional_on needs kind: binary")
        return self

    @property
    def loss_name(self) -> str:
        """The loss actually used (the kind's default when `loss` is unset)."""
        return self.loss or ("bce" if self.kind == "binary" else "mse")


def _duplicates(names: list[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})


def _check_tasks(tasks: list[TaskConfig]) -> None:
    """Task names are unique; each ``conditional_on`` names an earlier binary task (so chains
    have no cycles)."""
    dup = _duplicates([t.name for t in tasks])
    if dup:
        raise ValueError(f"tasks: duplicate task names: {dup}")
    for i, t in enumerate(tasks):
        if t.conditional_on is None:
            continue
        earlier = {u.name: u for u in tasks[:i]}
        parent = earlier.get(t.conditional_on)
        if parent is None:
            raise ValueError(
                f"tasks[{i}].conditional_on: {t.conditional_on!r} is not an earlier "
                f"task; earlier tasks: {sorted(earlier)}"
            )
        if parent.kind != "binary":
            raise ValueError(
                f"tasks[{i}].conditional_on: {parent.name!r} is a regression task; a chain needs a binary parent"
            )


# --------------------------------------------------------------------------- data: split


def _check_fractions(fractions: tuple[float, float, float]) -> tuple[float, float, float]:
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    return fractions


Fractions = Annotated[tuple[float, float, float], AfterValidator(_check_fractions)]
"""(train, valid, test) shares: each >= 0, summing to 1."""


class RandomSplit(Strict):
    """Permute rows with numpy ``default_rng(seed)`` and cut by `fractions` (train, valid, test)."""

    kind: Literal["random"]
    seed: int = 2021
    fractions: Fractions = (0.8, 0.1, 0.1)


class TimeSplit(Strict):
    """Sort rows by `column` (stable, so file order breaks ties) and cut by `fractions`."""

    kind: Literal["time"]
    column: str
    fractions: Fractions = (0.8, 0.1, 0.1)


class FilesSplit(Strict):
    """The splits are separate files."""

    kind: Literal["files"]
    train: str
    valid: str
    test: str


Split = Annotated[RandomSplit | TimeSplit | FilesSplit, Field(discriminator="kind")]

#: A layer width: hidden sizes, towers, experts (0 or negative would build an empty or broken layer).
Width = Annotated[int, Field(ge=1)]


class CsvOptions(Strict):
    delimiter: str = Field(",", min_length=1, max_length=1, description="one character")
    header: bool = True
    column_names: list[str] | None = Field(None, description="names when the file has no header")


class StreamConfig(Strict):
    """Stream the train split from parquet instead of loading it (data larger than memory).

    Needs ``split.kind: files`` whose ``train`` is a parquet file or a directory of parquet
    files (read through ``pyarrow.dataset``; valid and test stay in memory). Each epoch reads the
    files in a seeded random order, `chunk_rows` rows at a time, and shuffles rows within a
    buffer: every row read joins the buffer, and a uniformly drawn subset of buffer + chunk
    leaves it, so at most ``shuffle_buffer + chunk_rows`` rows are held (plus one partial
    batch). The same seed gives the same batches. Preprocessing is fitted by one streaming
    pass before training: vocabularies exactly on every train row (memory O(distinct ids)),
    numerical statistics on a seeded uniform sample of at most `fit_sample_rows` rows.
    """

    chunk_rows: int = Field(65536, ge=1, description="rows read from a file at once")
    shuffle_buffer: int = Field(
        262144, ge=0, description="rows held for shuffling (0: only the file order is shuffled)"
    )
    fit_sample_rows: int = Field(
        1_000_000, ge=1, description="train rows sampled to fit numerical statistics (vocabularies see all)"
    )


class DataConfig(Strict):
    """Where rows come from and what they mean.

    Either `dataset` names a built-in recipe (``ranker datasets list``), which fills in the
    files, features, tasks and split of its protocol, or `path` + `features` + `tasks` + `split`
    describe the user's own data.
    """

    dataset: str | None = Field(None, description="built-in recipe, e.g. rk-ml100k")
    path: str | None = Field(None, description="CSV or parquet file (unless split.kind=files)")
    format: Literal["auto", "csv", "parquet"] = "auto"
    csv: CsvOptions = CsvOptions()
    features: list[Feature] = Field(default_factory=list)
    extra_features: list[Feature] = Field(
        default_factory=list,
        description="appended to `features` (or to a recipe's): e.g. a numerical column also "
        "read as categorical, `{kind: categorical, name: age_id, column: age}`",
    )
    tasks: list[TaskConfig] = Field(default_factory=list)
    split: Split | None = None
    group_column: str | None = Field(None, description="groups for GAUC (usually the user id)")
    item_column: str | None = Field(None, description="item id column (popularity baseline)")
    numerical_transform: Transform | None = Field(
        None, description="overrides the transform of every numerical feature"
    )
    stream: StreamConfig | None = Field(
        None, description="stream the train split in chunks (StreamConfig); default: load it in memory"
    )

    @model_validator(mode="after")
    def _complete(self) -> DataConfig:
        if self.dataset is None:
            missing = [k for k in ("features", "tasks", "split") if not getattr(self, k)]
            if missing:
                raise ValueError(
                    f"without `dataset`, data needs {', '.join(missing)} (own data must declare "
                    "its features, tasks and split)"
                )
            if self.path is None and not isinstance(self.split, FilesSplit):
                raise ValueError("without `dataset`, give `path` or a split of kind `files`")
        dup = _duplicates([f.name for f in self.features] + [f.name for f in self.extra_features])
        if dup:
            raise ValueError(f"duplicate feature names (features + extra_features): {dup}")
        _check_tasks(self.tasks)
        _check_no_label_leak(self.tasks, [*self.features, *self.extra_features])
        if self.stream is not None and self.split is not None and not isinstance(self.split, FilesSplit):
            raise ValueError(
                f"stream: streaming reads the train split from its own files; give split.kind: files "
                f"(train: a parquet file or a directory of them), not split.kind: {self.split.kind}"
            )
        return self


def _check_no_label_leak(tasks: list[TaskConfig], features: list[Any]) -> None:
    """A task's label column may not also be read as a feature (the model would see the answer)."""
    columns = {getattr(f, "column", None) or f.name: f.name for f in features}
    for i, t in enumerate(tasks):
        label = t.column or t.name
        if label in columns:
            raise ValueError(
                f"tasks[{i}]: the label column {label!r} of task {t.name!r} is also the feature "
                f"{columns[label]!r}; a label must not be a model input"
            )


# --------------------------------------------------------------------------- model parts


class EmbeddingEncoder(Strict):
    """Plain per-feature tables ``E_f[v]`` with an OOV row (index 1) and padding (index 0)."""

    kind: Literal["embedding"] = "embedding"
    dim: int = Field(16, ge=1)


class HashingEncoder(Strict):
    """Per-feature hashing trick ``E_f[h_f(v) mod M_f]`` (Weinberger et al., 2009).

    ``memory``: each feature's table has ``memory × V_f`` rows, V_f its train vocabulary (with
    reserved rows), so 1.0 spends what plain tables spend. Ids first seen after training still
    get a row (no vocabulary rebuild).
    """

    kind: Literal["hashing"] = "hashing"
    dim: int = Field(16, ge=1)
    memory: float = Field(1.0, gt=0, description="fraction of the plain tables' rows")
    seed: int = 0


class UnifiedEncoder(Strict):
    """Unified Embedding (Coleman et al., NeurIPS 2023): ONE table shared by every feature.

    Each value of feature t takes ``k`` rows ``h_{t,1..k}(v)`` of width ``dim // k`` and
    concatenates them (``per_feature_probes`` overrides k per feature). The table has
    ``memory × Σ_f V_f × dim / (dim // k)`` rows, i.e. ``memory`` times the plain tables'
    parameters.
    """

    kind: Literal["unified"] = "unified"
    dim: int = Field(16, ge=1)
    probes: int = Field(2, ge=1)
    per_feature_probes: dict[str, int] = Field(default_factory=dict)
    memory: float = Field(1.0, gt=0)
    seed: int = 0


class TorchrecEncoder(Strict):
    """Categorical tables held by a torchrec ``EmbeddingCollection``; under torchrun they are
    sharded over the processes by torchrec's planner and ``DistributedModelParallel``
    (docs/distributed.md). Needs the optional extra ``ranker[torchrec]``.

    ``table``: ``per_feature`` (plain tables, as ``kind: embedding``) or ``unified`` (ONE hashed
    table every feature probes, as ``kind: unified``, with its ``probes``, ``per_feature_probes``,
    ``memory`` and ``seed``, which only it reads).

    The tables are trained by fbgemm's optimizer fused into the backward pass (the only kind
    torchrec shards; on CPU: ``rowwise_adagrad``, ``adagrad`` or ``sgd``), at ``lr`` (default
    ``train.lr``); the rest of the model keeps ``train.optimizer``. One process runs the same path
    on a world of one, so a config trains the same numbers on 1 or N processes.
    """

    kind: Literal["torchrec"] = "torchrec"
    dim: int = Field(16, ge=1)
    sharding: Literal["auto", "row_wise", "table_wise"] = "auto"
    optimizer: Literal["rowwise_adagrad", "adagrad", "sgd"] = "rowwise_adagrad"
    lr: float | None = Field(None, gt=0, description="the tables' learning rate (default: train.lr)")
    eps: float = Field(1e-8, gt=0, description="Adagrad's epsilon")
    table: Literal["per_feature", "unified"] = "per_feature"
    probes: int = Field(2, ge=1, description="table: unified: rows per value")
    per_feature_probes: dict[str, int] = Field(default_factory=dict, description="table: unified")
    memory: float = Field(1.0, gt=0, description="table: unified: fraction of the plain tables' parameters")
    seed: int = Field(0, description="table: unified: the hash seed")

    @model_validator(mode="after")
    def _unified_only(self) -> TorchrecEncoder:
        # values, not keys: a run's saved config.yaml writes every default out
        unified = ("probes", "per_feature_probes", "memory", "seed")
        stray = [
            k for k in unified if getattr(self, k) != type(self).model_fields[k].get_default(call_default_factory=True)
        ]
        if self.table == "per_feature" and stray:
            raise ValueError(f"{', '.join(stray)}: read only with table: unified (this table is per_feature)")
        width = self.dim if self.table == "per_feature" else self.dim // self.probes
        if width % 4:
            how = "dim" if self.table == "per_feature" else "dim // probes"
            raise ValueError(
                f"dim: the table's rows are {width} wide ({how}); fbgemm's kernels, which train sharded tables, "
                "need a width that is a multiple of 4"
            )
        return self


CategoricalEncoder = Annotated[
    EmbeddingEncoder | HashingEncoder | UnifiedEncoder | TorchrecEncoder, Field(discriminator="kind")
]


class ScalarEncoder(Strict):
    """Numerical features enter as their transformed scalar plus the missing indicator."""

    kind: Literal["scalar"] = "scalar"


class PiecewiseLinearEncoder(Strict):
    """Piecewise Linear Encoding (Gorishniy et al., 2022) of every numerical feature.

    ``kind: piecewise_linear`` (called ``ple`` before; ``ple`` now only names the multi-task
    heads, :class:`PLEHeads`).

    ``embed: false`` concatenates the parameter-free encodings; ``embed: true`` adds the
    per-feature linear → ReLU embedding of width ``dim`` (the paper's Q-LR / T-LR).
    Bins: train quantiles (``quantile``), target-aware tree bins on the first task's label
    (``tree``, the paper's single-target setting) or on every task at once (``tree_all``: one
    tree whose split criterion sums the Gini impurities of all tasks without a ``mask_column``,
    so a multi-task model gets edges where any of its tasks changes, not only the first).
    """

    kind: Literal["piecewise_linear"] = "piecewise_linear"
    n_bins: int = Field(16, ge=1)
    bins: Literal["quantile", "tree", "tree_all"] = "quantile"
    embed: bool = False
    dim: int = Field(16, ge=1)


class PeriodicEncoder(Strict):
    """Periodic embeddings ``[sin 2πcx, cos 2πcx]`` → linear → ReLU (the paper's PLR)."""

    kind: Literal["periodic"] = "periodic"
    n_frequencies: int = Field(16, ge=1)
    sigma: float = Field(0.1, gt=0)
    learned: bool = True
    dim: int = Field(16, ge=1)


class LinearNumericalEncoder(Strict):
    """Per-feature linear embedding of the transformed scalar (the paper's "L")."""

    kind: Literal["linear"] = "linear"
    dim: int = Field(16, ge=1)


NumericalEncoder = Annotated[
    ScalarEncoder | PiecewiseLinearEncoder | PeriodicEncoder | LinearNumericalEncoder, Field(discriminator="kind")
]


def _default_kinds(values: Any, defaults: dict[str, str]) -> Any:
    """Let a section with a single obvious kind omit ``kind:`` (``backbone: {hidden: [64]}``)."""
    if isinstance(values, dict):
        values = dict(values)
        for key, kind in defaults.items():
            part = values.get(key)
            if isinstance(part, dict) and "kind" not in part:
                values[key] = {"kind": kind, **part}
    return values


class EncodersConfig(Strict):
    categorical: CategoricalEncoder = EmbeddingEncoder()
    numerical: NumericalEncoder = ScalarEncoder()

    @model_validator(mode="before")
    @classmethod
    def _kinds(cls, values: Any) -> Any:
        return _default_kinds(values, {"categorical": "embedding", "numerical": "scalar"})

    @field_validator("numerical", mode="before")
    @classmethod
    def _renamed(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("kind") == "ple":
            raise ValueError(
                "kind 'ple' was renamed to 'piecewise_linear' "
                "(`ple` now only names the multi-task heads, model.heads.kind)"
            )
        return value


class ConcatInteraction(Strict):
    """No explicit interaction: the feature vectors are concatenated."""

    kind: Literal["concat"] = "concat"


class CrossInteraction(Strict):
    """DCN-V2 cross network over the concatenated fields (Wang et al., WWW 2021).

    ``structure``: ``stacked`` (cross → backbone; `projection` narrows the crossed vector
    first), ``parallel`` (cross ∥ backbone, concatenated) or ``cross_only`` (no backbone).
    ``rank``: None = full-rank W_l, r = low-rank U_l V_lᵀ; ``num_experts`` > 1 = mixture of
    low-rank experts (DCN-Mix, needs a rank).
    """

    kind: Literal["cross"] = "cross"
    num_layers: int = Field(3, ge=1)
    rank: int | None = Field(None, ge=1)
    num_experts: int = Field(1, ge=1)
    expert_activation: Literal["tanh", "relu", "gelu", "silu", "none"] = "tanh"
    structure: Literal["stacked", "parallel", "cross_only"] = "stacked"
    projection: int | None = Field(None, ge=1, description="stacked only: width before the backbone")

    @model_validator(mode="after")
    def _consistent(self) -> CrossInteraction:
        if self.num_experts > 1 and self.rank is None:
            raise ValueError("num_experts > 1 (DCN-Mix) needs a low rank: set rank")
        if self.projection is not None and self.structure != "stacked":
            raise ValueError("projection only applies to structure: stacked")
        return self


Interaction = Annotated[ConcatInteraction | CrossInteraction, Field(discriminator="kind")]


class MLPBackbone(Strict):
    """Stack of Linear → (norm) → activation → dropout."""

    kind: Literal["mlp"] = "mlp"
    hidden: list[Width] = Field(default_factory=lambda: [256, 128])
    dropout: float = Field(0.1, ge=0, lt=1)
    norm: Norm = "none"
    activation: Activation = "relu"


class ResNetBackbone(Strict):
    """Linear(in, width) → `num_blocks` × (x + F(x)) → norm → activation (Gorishniy et al., 2021)."""

    kind: Literal["resnet"] = "resnet"
    width: int = Field(256, ge=1)
    num_blocks: int = Field(2, ge=1)
    hidden: int = Field(512, ge=1, description="inner width of each block's F")
    dropout: float = Field(0.1, ge=0, lt=1)
    norm: Norm = "batch"
    activation: Activation = "relu"


class DenseNetBackbone(Strict):
    """`num_blocks` × concat(x, F(x)), each adding `growth` features (Huang et al., 2017)."""

    kind: Literal["densenet"] = "densenet"
    num_blocks: int = Field(2, ge=1)
    growth: int = Field(128, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    norm: Norm = "batch"
    activation: Activation = "relu"


Backbone = Annotated[MLPBackbone | ResNetBackbone | DenseNetBackbone, Field(discriminator="kind")]


class LinearHeads(Strict):
    """Shared bottom (Caruana, 1997): the backbone is shared; each task has a tower and a logit.

    ``tower: []`` (the default) is one linear logit per task on the backbone output.
    """

    kind: Literal["linear"] = "linear"
    tower: list[Width] = Field(default_factory=list, description="per-task MLP widths before the logit")
    dropout: float = Field(0.0, ge=0, lt=1)
    activation: Activation = "relu"


class MMoEHeads(Strict):
    """MMoE (Ma et al., KDD 2018): shared experts, one softmax gate per task, per-task towers.

    The experts read the backbone's output; ``model.backbone.hidden: []`` gives the paper's
    layout (experts on the embeddings).
    """

    kind: Literal["mmoe"] = "mmoe"
    num_experts: int = Field(4, ge=1)
    expert: list[Width] = Field(default_factory=lambda: [64], min_length=1, description="expert MLP widths")
    tower: list[Width] = Field(default_factory=list)
    dropout: float = Field(0.0, ge=0, lt=1)
    activation: Activation = "relu"


class PLEHeads(Strict):
    """PLE (Tang et al., RecSys 2020): task-specific and shared experts, gates per task, stacked.

    Each of `num_levels` extraction levels has `task_experts` experts per task and
    `shared_experts` shared ones; task t's gate mixes its own and the shared experts, the shared
    gate (all levels but the last) mixes every expert. Not the numerical encoding of the same
    initials (``model.encoders.numerical.kind: piecewise_linear``).
    """

    kind: Literal["ple"] = "ple"
    num_levels: int = Field(2, ge=1)
    task_experts: int = Field(1, ge=1)
    shared_experts: int = Field(1, ge=1)
    expert: list[Width] = Field(default_factory=lambda: [64], min_length=1)
    tower: list[Width] = Field(default_factory=list)
    dropout: float = Field(0.0, ge=0, lt=1)
    activation: Activation = "relu"


Heads = Annotated[LinearHeads | MMoEHeads | PLEHeads, Field(discriminator="kind")]


class NoHistory(Strict):
    kind: Literal["none"] = "none"


class MeanPoolHistory(Strict):
    """Masked mean of (item embedding ⊕ action embedding) over the history events; ``recent``:
    also the mean over the k most recent events, concatenated."""

    kind: Literal["mean"] = "mean"
    action_dim: int = Field(8, ge=1)
    recent: int | None = Field(None, ge=1)


class TransActHistory(Strict):
    """TransAct (Xia et al., KDD 2023): target-aware transformer over the recent actions.

    ``recent_mask``: in training, hide a random number of the most recent events, up to this
    many (an integer), or those within a random window of up to this many seconds (a float,
    e.g. ``3600.0``); null disables it. ``time_encoding`` adds an encoding of the time before
    the example (the paper uses none, hence off by default). ``max_len`` keeps the most recent
    events only (null: all). ``attention_dropout`` drops attention weights (PyTorch's layer ties
    it to ``dropout``; 0 by default because it halves CPU throughput).

    ``early_fusion: false`` runs the transformer over the history alone (once per user at
    serving time) and its output is the same for every candidate; ``target_attention: true``
    (only with ``early_fusion: false``) adds the candidate's softmax attention over the
    transformer's outputs, so the model stays target-aware while serving encodes the history
    once per request (see :mod:`ranker.nn.transact`).
    """

    kind: Literal["transact"] = "transact"
    action_dim: int = Field(8, ge=1)
    d_model: int | None = Field(None, ge=1, description="transformer width (default: the event (+ item) width)")
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(1, ge=1)
    ff_dim: int = Field(64, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    k_recent: int = Field(3, ge=0)
    time_encoding: bool = False
    early_fusion: bool = True
    target_attention: bool = False
    recent_mask: int | float | None = 2
    attention_dropout: float = Field(0.0, ge=0, lt=1)
    max_len: int | None = Field(None, ge=1)

    @field_validator("recent_mask")
    @classmethod
    def _window(cls, value: float | None) -> float | None:
        if value is not None and value < 0:
            raise ValueError(f"must be >= 0 (events, or seconds as a float), got {value}")
        return value

    @model_validator(mode="after")
    def _recent_fits(self) -> TransActHistory:
        if self.max_len is not None and self.k_recent > self.max_len:
            raise ValueError(
                f"k_recent {self.k_recent} is more than max_len {self.max_len}: the model would keep more "
                "recent events than it reads"
            )
        return self

    @model_validator(mode="after")
    def _fusion(self) -> TransActHistory:
        if self.target_attention and self.early_fusion:
            raise ValueError(
                "target_attention: true reads the candidate after the transformer; set early_fusion: false "
                "(early fusion already joins the candidate to every event)"
            )
        return self


class DINHistory(Strict):
    """DIN target attention (Zhou et al., KDD 2018): Σ_j a(e_j, c)·e_j, no softmax."""

    kind: Literal["din"] = "din"
    action_dim: int = Field(8, ge=1)
    hidden: list[Width] = Field(default_factory=lambda: [64, 32])


HistoryEncoder = Annotated[NoHistory | MeanPoolHistory | TransActHistory | DINHistory, Field(discriminator="kind")]


class ModelConfig(Strict):
    """Encoders → interaction → backbone → heads, with an optional history encoder."""

    encoders: EncodersConfig = EncodersConfig()
    history: HistoryEncoder = MeanPoolHistory()
    interaction: Interaction = ConcatInteraction()
    backbone: Backbone = MLPBackbone()
    heads: Heads = LinearHeads()

    @model_validator(mode="before")
    @classmethod
    def _kinds(cls, values: Any) -> Any:
        return _default_kinds(
            values, {"history": "mean", "interaction": "concat", "backbone": "mlp", "heads": "linear"}
        )


# --------------------------------------------------------------------------- training


class DistillConfig(Strict):
    """Knowledge distillation (Hinton et al., 2015): α · hard loss + (1 − α) · τ² · soft loss.

    The soft loss compares the student's σ(z_s / τ) with the teacher's σ(z_t / τ) per binary
    task (squared error of the outputs for regression tasks). ``soft_on_masked``: also distil
    the rows where a task's label is masked (the teacher still has an opinion there).
    """

    alpha: float = Field(0.5, ge=0, le=1, description="weight of the hard-label loss")
    temperature: float = Field(1.0, gt=0)
    soft_on_masked: bool = False


class BaseTrainConfig(Strict):
    """What every model family's ``train:`` section shares: the optimizer, the epoch loop
    (selection, early stopping, lr decay, weight average) and the runtime (device, threads,
    logging). Each family extends it with its own batching and overrides defaults that differ.
    """

    epochs: int = Field(20, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adamw", "adam"] = "adamw"
    betas: tuple[float, float] = Field(
        (0.9, 0.999), description="Adam's (β1, β2); the HSTU public code trains with (0.9, 0.98)"
    )
    clip_grad_norm: float | None = Field(10.0, gt=0, description="max global gradient norm")
    lr_decay_on_plateau: float | None = Field(
        None, gt=0, lt=1, description="multiply the lr by this after an evaluation without gain"
    )
    min_lr: float = Field(1e-6, ge=0)
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="keep an exponential moving average of the weights (e.g. 0.999); validation, "
        "selection and the saved model use the averaged weights",
    )
    patience: int = Field(2, ge=0, description="evaluations without validation gain before stopping")
    eval_every: int = Field(1, ge=1, description="validate every this many epochs (and at the last)")
    seed: int = 2021
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: cuda when available; bf16 autocast on cuda"
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores, or $RANKER_THREADS)")
    progress: bool = True
    tensorboard: bool = Field(False, description="also log to RUN_DIR/tensorboard (needs ranker[tensorboard])")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap for quick runs")


class TrainConfig(BaseTrainConfig):
    """The feature ranker's training: rows in shuffled batches, selection on the mean valid AUC
    of the binary tasks (or their group AUC / group NDCG@10: `select_metric`)."""

    batch_size: int = Field(1024, ge=1)
    eval_batch_size: int = Field(8192, ge=1)
    embedding_l2: float = Field(0.0, ge=0, description="λ·Σ‖E‖² over embedding tables, added to the loss")
    distill: DistillConfig = Field(DistillConfig(), description="used by `ranker distill` only")
    select_metric: Literal["auc", "gauc", "ndcg@10"] = Field(
        "auc",
        description="validation metric that selects the epoch and stops early: auc over all rows, or per "
        "data.group_column group: gauc, ndcg@10 (each group's rows ranked as one list, e.g. a request's "
        "candidates); needs data.group_column for the group metrics",
    )


class ServingConfig(Strict):
    """The one score a served ranking sorts by, from the task outputs p_t.

    ``sum``: Σ_t w_t · p_t; ``product``: Π_t p_t^{w_t}. Tasks missing from `weights` get
    weight 0 (an empty mapping means weight 1 for every task). A chained task contributes its
    joint probability p(task ∧ parent).
    """

    weights: dict[str, float] = Field(default_factory=dict)
    combine: Literal["sum", "product"] = "sum"


class RunConfig(Strict):
    """The whole YAML file."""

    name: str = "run"
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    serving: ServingConfig = ServingConfig()

    @model_validator(mode="after")
    def _groups_to_select_on(self) -> RunConfig:
        if self.train.select_metric != "auc" and self.data.group_column is None:
            raise ValueError(
                f"train.select_metric: {self.train.select_metric} is computed per group, and data.group_column "
                "is not set (name the column whose rows form one list, e.g. the request or user id)"
            )
        return self

    @model_validator(mode="after")
    def _history_fits(self) -> RunConfig:
        history = self.model.history
        if not isinstance(history, TransActHistory):
            return self
        for key in ("features", "extra_features"):
            for i, f in enumerate(getattr(self.data, key)):
                if isinstance(f, HistoryFeature) and history.k_recent > f.max_len:
                    raise ValueError(
                        f"model.history.k_recent {history.k_recent} is more than the {f.max_len} events "
                        f"history {f.name!r} keeps (data.{key}.{i}.max_len)"
                    )
        return self
