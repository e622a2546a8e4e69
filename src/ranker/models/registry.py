"""Build a model from its config: the single place where a config ``kind`` meets a module.

A later capability registers a new kind by adding its config class to
:mod:`ranker.config.schema` and a builder here; the trainer and CLI stay untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ranker.config import schema as cs
from ranker.data.layout import Layout
from ranker.errors import ConfigError
from ranker.models.fields import BatchFields, categorical_fields
from ranker.models.numeric_block import build_numerical
from ranker.models.ranker import ConcatInteraction, LinearHeads, Ranker
from ranker.nn import MLP, FeatureEmbeddings, MeanPoolHistory
from ranker.nn.blocks import DenseNet, ResNet
from ranker.nn.crossnet import CrossNetV2
from ranker.nn.din import DINAttention
from ranker.nn.embeddings import CategoricalEncoder, HashedEmbeddings, UnifiedEmbeddings
from ranker.nn.history import HistoryEvents
from ranker.nn.interaction import CrossStructure
from ranker.nn.mmoe import MMoE
from ranker.nn.progressive import PLE, PLEExperts
from ranker.nn.towers import TaskTowers, TowerSpec
from ranker.nn.transact import TransActEncoder

# kind -> builder(config, in_dim) -> (module, out_dim)
INTERACTIONS: dict[str, Callable[[Any, int, int], tuple[nn.Module, int]]] = {
    "concat": lambda cfg, in_dim, n_fields: (ConcatInteraction(), in_dim)
}
BACKBONES: dict[str, Callable[[Any, int], tuple[nn.Module, int]]] = {}
# kind -> builder(config, in_dim, task names) -> module mapping (B, in_dim) to (B, T) logits
HEADS: dict[str, Callable[[Any, int, list[str]], nn.Module]] = {}


def _mlp(cfg: cs.MLPBackbone, in_dim: int) -> tuple[nn.Module, int]:
    mlp = MLP(in_dim, cfg.hidden, dropout=cfg.dropout, norm=cfg.norm, activation=cfg.activation)
    return mlp, mlp.out_dim


def _resnet(cfg: cs.ResNetBackbone, in_dim: int) -> tuple[nn.Module, int]:
    net = ResNet(
        in_dim,
        width=cfg.width,
        num_blocks=cfg.num_blocks,
        hidden=cfg.hidden,
        dropout=cfg.dropout,
        norm=cfg.norm,
        activation=cfg.activation,
    )
    return net, net.out_dim


def _densenet(cfg: cs.DenseNetBackbone, in_dim: int) -> tuple[nn.Module, int]:
    net = DenseNet(
        in_dim,
        num_blocks=cfg.num_blocks,
        growth=cfg.growth,
        dropout=cfg.dropout,
        norm=cfg.norm,
        activation=cfg.activation,
    )
    return net, net.out_dim


def _tower(cfg: cs.LinearHeads | cs.MMoEHeads | cs.PLEHeads) -> TowerSpec:
    return TowerSpec(tuple(cfg.tower), cfg.dropout, cfg.activation)


def _expert(cfg: cs.MMoEHeads | cs.PLEHeads) -> TowerSpec:
    return TowerSpec(tuple(cfg.expert), cfg.dropout, cfg.activation)


def _linear_heads(cfg: cs.LinearHeads, in_dim: int, tasks: list[str]) -> nn.Module:
    """Shared bottom: one linear logit per task (today's layout), or per-task towers."""
    if not cfg.tower:
        return LinearHeads(in_dim, len(tasks))
    return TaskTowers(in_dim, len(tasks), _tower(cfg))


def _mmoe(cfg: cs.MMoEHeads, in_dim: int, tasks: list[str]) -> nn.Module:
    return MMoE(in_dim, tasks, num_experts=cfg.num_experts, expert=_expert(cfg), tower=_tower(cfg))


def _ple(cfg: cs.PLEHeads, in_dim: int, tasks: list[str]) -> nn.Module:
    counts = PLEExperts(cfg.num_levels, cfg.task_experts, cfg.shared_experts)
    return PLE(in_dim, tasks, experts=counts, expert=_expert(cfg), tower=_tower(cfg))


HEADS["linear"] = _linear_heads
HEADS["mmoe"] = _mmoe
HEADS["ple"] = _ple
BACKBONES["mlp"] = _mlp
BACKBONES["resnet"] = _resnet
BACKBONES["densenet"] = _densenet


def _interaction_and_backbone(cfg: cs.ModelConfig, in_dim: int, n_fields: int) -> tuple[nn.Module, nn.Module, int]:
    """The interaction block and the backbone after it (for DCN-V2 the backbone lives inside)."""
    inter = cfg.interaction
    if isinstance(inter, cs.CrossInteraction):
        cross = CrossNetV2(
            in_dim,
            inter.num_layers,
            rank=inter.rank,
            num_experts=inter.num_experts,
            expert_activation=None if inter.expert_activation == "none" else inter.expert_activation,
        )
        deep = None
        if inter.structure != "cross_only":
            deep, _ = _pick(BACKBONES, cfg.backbone.kind, "model.backbone")(cfg.backbone, inter.projection or in_dim)
        block = CrossStructure(cross, structure=inter.structure, deep=deep, projection=inter.projection)
        return block, nn.Identity(), block.out_dim
    interaction, width = _pick(INTERACTIONS, inter.kind, "model.interaction")(inter, in_dim, n_fields)
    backbone, width = _pick(BACKBONES, cfg.backbone.kind, "model.backbone")(cfg.backbone, width)
    return interaction, backbone, width


def build_model(cfg: cs.ModelConfig, layout: Layout) -> Ranker:
    """Assemble a :class:`Ranker` for the encoded features described by `layout`."""
    if not layout.tasks:
        raise ConfigError("data.tasks: at least one task is needed to build a ranker")
    emb = build_categorical(cfg.encoders.categorical, layout)
    dims = emb.field_dims()
    numerical = build_numerical(cfg.encoders.numerical, layout) if layout.numerical else None
    if numerical is not None:
        dims.append(numerical.out_dim)
    dims.extend(layout.dense.values())
    histories, names = nn.ModuleList(), []
    for name, info in layout.history.items():
        h = build_history(cfg.history, name, emb, info)
        if h is not None:
            histories.append(h)
            names.append(name)
            dims.append(h.out_dim)
    if not dims:
        raise ConfigError("data.features: the model has no input features")
    interaction, backbone, width = _interaction_and_backbone(cfg, sum(dims), len(dims))
    heads = _pick(HEADS, cfg.heads.kind, "model.heads")(cfg.heads, width, list(layout.tasks))
    return Ranker(
        emb,
        histories,
        interaction,
        backbone,
        heads,
        inputs=BatchFields.of(layout, tuple(names)),
        numerical=numerical,
        candidate_index=_candidate_index(layout),
    )


def build_history(
    cfg: cs.HistoryEncoder, name: str, emb: CategoricalEncoder, info: dict[str, Any]
) -> HistoryEvents | None:
    """The configured encoder of history `name` (None for ``kind: none``)."""
    owner, n_actions = info["item_vocab"], info["n_actions"]
    if isinstance(cfg, cs.MeanPoolHistory):
        return MeanPoolHistory(emb, owner, n_actions, cfg.action_dim, cfg.recent)
    if isinstance(cfg, cs.TransActHistory):
        if cfg.time_encoding and not info["has_time"]:
            raise ConfigError(f"model.history.time_encoding: history {name!r} has no time_column")
        try:
            return _transact(cfg, emb, owner, n_actions)
        except ValueError as exc:  # num_heads must divide the width, which the data decides
            raise ConfigError(
                f"model.history (transact, history {name!r}): {exc}; the width d_model is model.history.d_model "
                "if set, else the item embedding dim + action_dim, plus the item dim again with early_fusion"
            ) from None
    if isinstance(cfg, cs.DINHistory):
        return DINAttention(emb, owner, n_actions, action_dim=cfg.action_dim, hidden=tuple(cfg.hidden))
    return None


def _transact(cfg: cs.TransActHistory, emb: CategoricalEncoder, owner: str, n_actions: int) -> TransActEncoder:
    return TransActEncoder(
        emb,
        owner,
        n_actions,
        action_dim=cfg.action_dim,
        d_model=cfg.d_model,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        ff_dim=cfg.ff_dim,
        dropout=cfg.dropout,
        k_recent=cfg.k_recent,
        time_encoding=cfg.time_encoding,
        early_fusion=cfg.early_fusion,
        target_attention=cfg.target_attention,
        recent_mask=cfg.recent_mask,
        attention_dropout=cfg.attention_dropout,
        max_len=cfg.max_len,
    )


def categorical_ids(cfg: cs.ModelConfig) -> str:
    """The preprocessing id mode the configured categorical encoder reads."""
    encoder = cfg.encoders.categorical
    if isinstance(encoder, cs.TorchrecEncoder):
        return "hash" if encoder.table == "unified" else "vocab"
    return "vocab" if isinstance(encoder, cs.EmbeddingEncoder) else "hash"


def build_categorical(cfg: cs.CategoricalEncoder, layout: Layout) -> CategoricalEncoder:
    if isinstance(cfg, cs.UnifiedEncoder | cs.TorchrecEncoder):
        unknown = sorted(set(cfg.per_feature_probes) - set(layout.vocab_sizes))
        if unknown:
            raise ConfigError(
                f"model.encoders.categorical.per_feature_probes: {unknown} are not "
                f"categorical features; known: {sorted(layout.vocab_sizes)}"
            )
    if isinstance(cfg, cs.TorchrecEncoder):  # torchrec is an optional extra: imported only here
        from ranker.nn.torchrec_tables import TableTraining, TorchrecEmbeddings, UnifiedLayout

        training = TableTraining(sharding=cfg.sharding, optimizer=cfg.optimizer, lr=cfg.lr, eps=cfg.eps)
        shared = (
            UnifiedLayout(cfg.probes, cfg.per_feature_probes, cfg.memory, cfg.seed) if cfg.table == "unified" else None
        )
        return TorchrecEmbeddings(categorical_fields(layout), cfg.dim, training, shared)
    if isinstance(cfg, cs.HashingEncoder):
        return HashedEmbeddings(categorical_fields(layout), cfg.dim, memory=cfg.memory, seed=cfg.seed)
    if isinstance(cfg, cs.UnifiedEncoder):
        return UnifiedEmbeddings(
            categorical_fields(layout),
            cfg.dim,
            probes=cfg.probes,
            per_feature_probes=cfg.per_feature_probes,
            memory=cfg.memory,
            seed=cfg.seed,
        )
    return FeatureEmbeddings(categorical_fields(layout), cfg.dim)


def _pick(table: dict[str, Any], kind: str, key: str) -> Any:
    if kind not in table:
        raise ConfigError(f"{key}.kind: {kind!r} has no builder; available: {sorted(table)}")
    return table[kind]


def _candidate_index(layout: Layout) -> int | None:
    """Field position of the candidate item: the categorical feature that owns a history's items."""
    owners = {info["item_vocab"] for info in layout.history.values()}
    for i, (name, owner) in enumerate(layout.categorical.items()):
        if owner in owners and name == owner:
            return i
    return None
