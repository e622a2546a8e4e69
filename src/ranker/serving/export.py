"""`ranker export`: a ranking run's model as a ``torch.export`` program (.pt2) or an ONNX graph.

The feature ranker (:class:`~ranker.models.Ranker`, history encoder included) reads a batch
dict; an exported graph takes positional tensors. :class:`ExportedRanker` fixes that order, the
order of :func:`input_specs`: for every name the model reads, in the model's field order,

    cat/<f>                                   (B,)     int64   one per categorical feature
    multi/<f>, multi_mask/<f>                 (B, M_f) int64, bool   one pair per multi-valued feature
    num, num_missing                          (B, F)   float32 (only with numerical features)
    dense/<f>                                 (B, D_f) float32
    hist/<h>/items, mask[, actions][, times]  (B, L_h) int64, bool, int64, float32 (per history)

and returns ``(B, T)`` per-task outputs through :meth:`ranker.tasks.TaskSpec.outputs`: σ(logit)
for binary tasks (for a task chained to a parent, the conditional probability p(t | parent)),
the value for regression tasks. The same list is written beside the file as
``FILE.inputs.json``, with the task names and what each output is. Values are those of the
run's own ``Preprocessor`` (ids after its vocabularies, log1p-hours, left-padded histories).

Dynamic dimensions: the batch B always (``torch.export.Dim``). A history's length L_h is
dynamic from just above the longest slice ``x[:, -n:]`` its encoder takes (TransAct's
``max_len`` cut and ``k_recent`` rows, the mean pool's ``recent``: export guards ``L != n`` at
such a slice, so L = n itself cannot share the graph) up to the length the preprocessor pads to;
a shorter history is padded on the left, which never changes the output. Multi-valued lengths
are fixed to the preprocessor's ``max_len`` (what every encoded row has).

Nothing in the model had to change: in ``eval()`` FastDropout is the identity and TransAct's
random recent mask is off, so neither is traced; the one custom autograd Function a feature
ranker can meet (``gather_rows`` of unified embeddings) is traced through its forward
(``index_select``), its ``index_add_`` backward is never exported. TransAct's branches depend
on shapes only, which the length's range decides. ONNX comes from torch.onnx's dynamo exporter
(``dynamo=True``, onnxscript); the TorchScript exporter is not used. The generative HSTU ranker
(fused attention, a hand-written backward) and the retrieval models are not exported.

>>> import torch
>>> from ranker.config.schema import TaskConfig
>>> from ranker.tasks import TaskSpec
>>> class Two(torch.nn.Module):
...     def forward(self, batch):
...         return batch["num"][:, :2] * 0
>>> m = ExportedRanker(Two(), ("num",), TaskSpec.from_tasks([TaskConfig(name="a"), TaskConfig(name="b")]))
>>> m(torch.ones(3, 4)).tolist()
[[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ranker.data.layout import Layout
from ranker.data.preprocess import Preprocessor
from ranker.errors import ConfigError
from ranker.models import Ranker
from ranker.tasks import TaskSpec

FORMATS = ("pt2", "onnx")
BATCH = "batch"  # the name of the dynamic batch dimension


@dataclass(frozen=True)
class InputSpec:
    """One positional input: batch key, dtype and shape (a str names a dynamic dimension)."""

    name: str
    dtype: str  # "int64" | "bool" | "float32"
    shape: tuple[str | int, ...]
    vocab: int | None = None  # ids: rows of the table they index (vocab mode), for example inputs


class ExportedRanker(nn.Module):
    """A ranker with positional tensor inputs in ``names`` order → (B, T) task outputs."""

    def __init__(self, model: nn.Module, names: Sequence[str], spec: TaskSpec) -> None:
        super().__init__()
        self.model, self.names, self.spec = model, tuple(names), spec

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        raw = self.model(dict(zip(self.names, inputs, strict=True)))  # (B, T) logits / values
        return self.spec.outputs(raw)  # (B, T) probabilities / values


def input_specs(model: Ranker, pre: Preprocessor) -> list[InputSpec]:
    """The inputs `model` reads, in :class:`ExportedRanker`'s positional order (module docstring)."""
    layout, fields = pre.layout(), model.inputs
    ids = layout.ids == "vocab"
    specs = [
        InputSpec(f"cat/{f}", "int64", (BATCH,), _rows(layout, layout.categorical[f], ids)) for f in fields.categorical
    ]
    multi_len = {f.name: f.max_len for f in pre.features if f.kind == "multi_categorical"}
    shape: tuple[str | int, ...]
    for f in fields.multi:
        shape = (BATCH, multi_len[f])
        specs += [InputSpec(f"multi/{f}", "int64", shape, _rows(layout, layout.multi[f], ids))]
        specs += [InputSpec(f"multi_mask/{f}", "bool", shape)]
    if model.numerical is not None:
        width = len(layout.numerical)
        specs += [InputSpec("num", "float32", (BATCH, width)), InputSpec("num_missing", "float32", (BATCH, width))]
    specs += [InputSpec(f"dense/{f}", "float32", (BATCH, layout.dense[f])) for f in fields.dense]
    for h in fields.histories:
        info, shape = layout.history[h], (BATCH, f"{h}_len")
        specs += [InputSpec(f"hist/{h}/items", "int64", shape, _rows(layout, info["item_vocab"], ids))]
        specs += [InputSpec(f"hist/{h}/mask", "bool", shape)]
        if info["n_actions"]:
            specs += [InputSpec(f"hist/{h}/actions", "int64", shape, info["n_actions"])]
        if info["has_time"]:
            specs += [InputSpec(f"hist/{h}/times", "float32", shape)]
    return specs


def _rows(layout: Layout, owner: str, vocab: bool) -> int | None:
    return layout.vocab_sizes[owner] if vocab else None


def history_lengths(model: Ranker, pre: Preprocessor) -> dict[str, tuple[int, int]]:
    """Per history, the (min, max) length the exported graph accepts (module docstring)."""
    layout = pre.layout()
    out = {}
    for h, encoder in zip(model.inputs.histories, model.histories, strict=True):
        longest = int(layout.history[h]["max_len"])
        # A slice x[:, -n:] guards L != n: the length starts above every such n of the encoder
        # (TransAct's max_len cut and k recent rows, the mean pool's recent window).
        slices = [getattr(encoder, a, None) or 0 for a in ("max_len", "k_recent", "recent")]
        shortest = max(2, *(int(n) + 1 for n in slices))
        out[f"{h}_len"] = (min(shortest, longest), longest)
    return out


def example_inputs(
    specs: Sequence[InputSpec], lengths: dict[str, tuple[int, int]], batch: int
) -> tuple[torch.Tensor, ...]:
    """Deterministic inputs of `batch` rows at every history's longest length (tracing, checks)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for s in specs:
        shape = [batch if d == BATCH else lengths[d][1] if isinstance(d, str) else d for d in s.shape]
        if s.dtype == "int64":
            out.append(torch.randint(0, s.vocab or 2**31, shape, generator=g))
        elif s.dtype == "bool":
            out.append(torch.rand(shape, generator=g) < 0.8)
        else:
            out.append(torch.rand(shape, generator=g))
    return tuple(out)


def dynamic_shapes(specs: Sequence[InputSpec], lengths: dict[str, tuple[int, int]]) -> tuple[dict[int, Any], ...]:
    """``torch.export`` dynamic shapes of the positional inputs: batch and history lengths."""
    dims = {BATCH: torch.export.Dim(BATCH, min=1, max=2**20)}
    dims.update({name: torch.export.Dim(name, min=lo, max=hi) for name, (lo, hi) in lengths.items() if lo < hi})
    return tuple({i: dims[d] for i, d in enumerate(s.shape) if isinstance(d, str) and d in dims} for s in specs)


def export_run(run_dir: Path, fmt: str, out: Path | None = None) -> dict[str, Any]:
    """Export a ranking run's model to `out` (default ``RUN/model.<fmt>``); see :func:`export_model`."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    model, pre = _load_ranking_run(Path(run_dir))
    return export_model(model, pre, fmt, Path(out) if out is not None else Path(run_dir) / f"model.{fmt}")


def export_model(model: Ranker, pre: Preprocessor, fmt: str, out: Path) -> dict[str, Any]:
    """Export `model` (eval mode) to `out` and its inputs to ``out.inputs.json``.

    The file is loaded back (pt2: ``torch.export.load``; onnx: ``onnx.checker`` and an
    onnxruntime session) and compared with eager on example inputs of another batch size; the
    largest absolute difference is returned with the paths.
    """
    spec = TaskSpec.from_tasks(pre.tasks)
    specs, lengths = input_specs(model, pre), history_lengths(model, pre)
    wrapper = ExportedRanker(model, [s.name for s in specs], spec).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    args, shapes = example_inputs(specs, lengths, 4), (dynamic_shapes(specs, lengths),)
    check = example_inputs(specs, lengths, 7)  # another batch size: the batch dimension is dynamic
    with torch.no_grad():
        expected = wrapper(*check)
        if fmt == "pt2":
            program = torch.export.export(wrapper, args, dynamic_shapes=shapes, strict=False)
            torch.export.save(program, out)
            got = torch.export.load(out).module()(*check)
        else:
            got = torch.from_numpy(_export_onnx(wrapper, specs, args, shapes, out, check))
    sidecar = write_inputs_json(out, specs, lengths, spec, fmt)
    return {"path": str(out), "inputs": str(sidecar), "max_abs_diff": float((got - expected).abs().max())}


def _load_ranking_run(run_dir: Path) -> tuple[Ranker, Preprocessor]:
    from ranker.families import family_of_run
    from ranker.ranking.run import load_run

    family = family_of_run(run_dir)
    if family.kind != "ranking":
        raise ConfigError(f"{run_dir}: a {family.kind} run; export supports ranking runs (the feature ranker)")
    _, model, pre = load_run(run_dir)
    if not isinstance(model, Ranker):
        raise ConfigError(f"{run_dir}: the model is a {type(model).__name__}; export supports the feature Ranker")
    return model, pre


def _export_onnx(
    wrapper: ExportedRanker,
    specs: Sequence[InputSpec],
    args: tuple[torch.Tensor, ...],
    shapes: tuple[Any, ...],
    out: Path,
    check: tuple[torch.Tensor, ...],
) -> Any:
    """torch.onnx's dynamo exporter → `out`; checked by onnx.checker; onnxruntime's outputs on `check`."""
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401 (torch.onnx's dynamo exporter imports it)
    except ImportError:
        raise ConfigError(
            "--format onnx needs onnx, onnxruntime and onnxscript: pip install 'ranker[export]'"
        ) from None
    names = [s.name for s in specs]
    program = torch.onnx.export(
        wrapper, args, dynamic_shapes=shapes, dynamo=True, input_names=names, output_names=["outputs"], verbose=False
    )
    if program is None:  # typing: the dynamo exporter always returns its program
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(out))
    onnx.checker.check_model(str(out), full_check=True)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the check runs on the threads torch was given
    session = onnxruntime.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    return session.run(None, {n: x.numpy() for n, x in zip(names, check, strict=True)})[0]


def write_inputs_json(
    out: Path, specs: Sequence[InputSpec], lengths: dict[str, tuple[int, int]], spec: TaskSpec, fmt: str
) -> Path:
    """``out.inputs.json``: positional inputs (order, dtype, shape), dynamic ranges, outputs."""
    doc = {
        "format": fmt,
        "inputs": [{k: v for k, v in asdict(s).items() if k != "vocab"} for s in specs],
        "dynamic": {BATCH: [1, None], **{d: list(r) for d, r in lengths.items()}},
        "output": {
            "name": "outputs",
            "shape": [BATCH, len(spec.names)],
            "tasks": list(spec.names),
            "values": ["probability" if b else "value" for b in spec.binary],
            "conditional_on": [None if p is None else spec.names[p] for p in spec.parents],
        },
    }
    path = out.with_name(out.name + ".inputs.json")
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
