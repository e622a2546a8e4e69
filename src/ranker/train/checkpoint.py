"""Atomic, resumable checkpoints that never unpickle.

Layout under ``run_dir/checkpoints/``:

- ``epoch-NNNN.safetensors`` — model weights after epoch N (safetensors: no code execution);
- ``epoch-NNNN.optim.pt`` — optimizer state, read back with ``torch.load(weights_only=True)``;
- ``epoch-NNNN.ema.safetensors`` — the weight average's shadow and step count
  (``train.ema_decay`` only);
- ``epoch-NNNN.tables.safetensors`` — sharded torchrec tables' fused optimizer state, whole
  (``kind: torchrec`` only; :mod:`ranker.distributed.sharding`);
- ``best-NNNN.safetensors`` — weights of the best validation epoch so far (the averaged ones
  when a weight average is kept);
- ``last.json`` — the trainer state (epoch, best epoch/score, patience, log length) naming the
  files above. It is written last, atomically, so a kill at any moment leaves a consistent
  pointer to complete files; files it no longer names are deleted afterwards.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import struct
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from ranker.data.sources import atomic_write_bytes
from ranker.errors import DataError
from ranker.train.ema import WeightAverage

_START_OVER = "the checkpoint is damaged: delete the run's checkpoints/ folder to train from the start"


#: torch dtype → its name in a safetensors header (the format's spec, huggingface/safetensors)
SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


@dataclass(frozen=True)
class Lazy:
    """A tensor to write without holding it beforehand: its dtype and shape (for the file's header),
    and ``get()``, called once, in file order, when its bytes are written. For a sharded table
    ``get`` is a collective that gathers it on rank 0, so the ranks that write nothing still call
    it (:func:`take_part`) and only one whole table is held at a time."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    get: Callable[[], torch.Tensor | None]


def take_part(tensors: Mapping[str, torch.Tensor | Lazy]) -> None:
    """What a rank that does not write does while rank 0 saves `tensors`: each Lazy's ``get``, in
    the same order."""
    for value in tensors.values():
        if isinstance(value, Lazy):
            value.get()


def save_weights(model: nn.Module, path: Path) -> None:
    """Write `model`'s state dict as safetensors, atomically (shared tensors stored once)."""
    save_tensors(model.state_dict(), path)


def save_tensors(tensors: Mapping[str, torch.Tensor | Lazy], path: Path) -> None:
    """Write named tensors as safetensors, atomically (shared tensors stored once).

    The file is streamed: its header from the dtypes and shapes, then each tensor's bytes straight
    from its memory (no serialised copy of the whole state, which the safetensors package's
    ``save_file`` makes); :class:`Lazy` tensors are fetched one at a time as they are written.
    The layout is the format's (an 8-byte little-endian header length, the JSON header padded with
    spaces to 8 bytes, the data in header order); ``safetensors.torch.load_file`` reads it.
    """
    plain = _dedupe_shared({k: v for k, v in tensors.items() if not isinstance(v, Lazy)})
    entries = [
        (k, v if isinstance(v, Lazy) else _held(v)) for k, v in tensors.items() if isinstance(v, Lazy) or k in plain
    ]
    header: dict[str, Any] = {}
    offset = 0
    for key, entry in entries:
        if entry.dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"{key}: dtype {entry.dtype} has no safetensors name")
        size = math.prod(entry.shape) * entry.dtype.itemsize
        header[key] = {"dtype": SAFETENSORS_DTYPES[entry.dtype], "shape": list(entry.shape)}
        header[key]["data_offsets"] = [offset, offset + size]
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(struct.pack("<Q", len(blob)) + blob)
            for key, entry in entries:
                tensor = entry.get()
                if tensor is None or tensor.dtype != entry.dtype or tuple(tensor.shape) != entry.shape:
                    raise ValueError(f"{key}: expected {entry.dtype} {entry.shape}, got {_described(tensor)}")
                out.write(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
                del tensor
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _held(tensor: torch.Tensor) -> Lazy:
    return Lazy(tensor.dtype, tuple(tensor.shape), lambda: tensor.detach().cpu().contiguous())


def _described(tensor: torch.Tensor | None) -> str:
    return "nothing" if tensor is None else f"{tensor.dtype} {tuple(tensor.shape)}"


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights into `model` (strict: every parameter must be present).

    A file that is missing or not safetensors (truncated, a pickle, a torch ``.pt``), or whose
    tensors do not fit `model` (names, shapes), is a DataError naming it; nothing is unpickled."""
    state = read_tensors(path)
    own = model.state_dict()
    for key, tensor in own.items():  # re-expand tensors shared under another name
        if key not in state:
            alias = next((k for k, v in own.items() if k in state and v.data_ptr() == tensor.data_ptr()), None)
            if alias is not None:
                state[key] = state[alias]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing / unexpected keys, size mismatches
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        raise DataError(
            f"{path}: its tensors do not fit the model its config describes ({'; '.join(lines[:2])[:300]})"
        ) from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a DataError naming it when it is missing or unreadable."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None


class TensorFile:
    """A safetensors file read a slice at a time (``safe_open``: only the asked rows leave the
    disk), so each rank of a sharded run reads its own rows of a whole-table checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = safe_open(str(path), framework="pt")
        except FileNotFoundError:
            raise DataError(f"{path}: missing") from None
        except (SafetensorError, OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None

    def keys(self) -> list[str]:
        return list(self._file.keys())

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._file.get_slice(key).get_shape())

    def read(self, key: str, index: tuple[slice, ...] | None = None) -> torch.Tensor:
        """The tensor `key`, or its `index` slice."""
        if index is None:
            return self._file.get_tensor(key)  # type: ignore[no-any-return]
        return self._file.get_slice(key)[index]  # type: ignore[no-any-return]


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def _copy_atomically(source: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    seen: dict[tuple[int, int], str] = {}
    out = {}
    for key, tensor in state.items():
        ident = (tensor.data_ptr(), tensor.numel())
        if ident in seen and tensor.numel() > 0:
            continue
        seen[ident] = key
        out[key] = tensor
    return out


class Checkpointer:
    """Saves and restores the training state of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "checkpoints"

    def save(
        self,
        epoch: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        state: dict[str, Any],
        *,
        is_best: bool,
        ema: WeightAverage | None = None,
        weights: Mapping[str, torch.Tensor | Lazy] | None = None,
        tables: Mapping[str, torch.Tensor | Lazy] | None = None,
    ) -> None:
        """``ema``: also keep its state; the best weights are then its shadow. ``weights``: the
        model's full state dict when ``model.state_dict()`` is not (sharded tables, whose
        :class:`Lazy` entries are gathered while they are written: the other ranks
        :func:`take_part` in the same order, weights then tables); ``tables``: the sharded tables'
        optimizer state (``epoch-NNNN.tables.safetensors``)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        weights = model.state_dict() if weights is None else weights
        epoch_file = self.dir / f"epoch-{epoch:04d}.safetensors"
        save_tensors(weights, epoch_file)
        if tables is not None:
            save_tensors(tables, self.tables_path(epoch))
        if ema is not None:
            save_tensors(ema.state(), self.dir / f"epoch-{epoch:04d}.ema.safetensors")
        buf = tempfile.SpooledTemporaryFile()
        torch.save(optimizer.state_dict(), buf)
        buf.seek(0)
        atomic_write_bytes(self.dir / f"epoch-{epoch:04d}.optim.pt", buf.read())
        if is_best and ema is not None:
            save_tensors(ema.shadow, self.dir / f"best-{epoch:04d}.safetensors")
        elif is_best:  # the epoch's file, copied: the weights are not held (nor gathered) twice
            _copy_atomically(epoch_file, self.dir / f"best-{epoch:04d}.safetensors")
        full = {**state, "epoch": epoch}
        atomic_write_bytes(self.dir / "last.json", json.dumps(full, indent=2).encode())
        self._prune(epoch, full["best_epoch"])

    def _prune(self, epoch: int, best_epoch: int) -> None:
        keep = {
            f"epoch-{epoch:04d}.safetensors",
            f"epoch-{epoch:04d}.optim.pt",
            f"epoch-{epoch:04d}.ema.safetensors",
            self.tables_path(epoch).name,
            f"best-{best_epoch:04d}.safetensors",
            "last.json",
        }
        for path in self.dir.iterdir():
            if path.name not in keep and not path.name.startswith("."):
                path.unlink(missing_ok=True)

    def weights_path(self) -> Path:
        """The weights of the last complete epoch (DataError before the first checkpoint)."""
        state = self.state()
        if state is None:
            raise DataError(f"{self.dir}: no checkpoint yet")
        return self.dir / f"epoch-{state['epoch']:04d}.safetensors"

    def tables_path(self, epoch: int) -> Path:
        """The sharded tables' optimizer state after `epoch` (``kind: torchrec`` only)."""
        return self.dir / f"epoch-{epoch:04d}.tables.safetensors"

    def state(self) -> dict[str, Any] | None:
        """``last.json`` (None before the first checkpoint); DataError when it is damaged."""
        path = self.dir / "last.json"
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not valid JSON ({_first_line(exc)}); {_START_OVER}") from None
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
            raise DataError(f"{path}: not a checkpoint pointer (no integer `epoch`); {_START_OVER}")
        return state

    def restore(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        ema: WeightAverage | None = None,
        *,
        clean: bool = True,
        load: Callable[[nn.Module, Path], None] = load_weights,
    ) -> dict[str, Any] | None:
        """Load the last complete epoch into `model`/`optimizer` (and `ema`); None if there is
        none. Temporary files of a write that a kill interrupted (``.name.XXXX``) are removed
        (`clean`; only the process that writes the run does it). ``load``: how the weights file
        goes into `model` (sharded tables: each rank its rows)."""
        if clean and self.dir.is_dir():
            for orphan in self.dir.glob(".*"):
                orphan.unlink(missing_ok=True)
        state = self.state()
        if state is None:
            return None
        epoch = state["epoch"]
        try:
            load(model, self.dir / f"epoch-{epoch:04d}.safetensors")
        except DataError as exc:
            raise DataError(f"{exc}; {_START_OVER}") from None
        path = self.dir / f"epoch-{epoch:04d}.optim.pt"
        try:
            optim_state = torch.load(path, weights_only=True)
            optimizer.load_state_dict(optim_state)
        except FileNotFoundError:
            raise DataError(f"{path}: missing; {_START_OVER}") from None
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
            raise DataError(f"{path}: not a readable optimizer state ({_first_line(exc)}); {_START_OVER}") from None
        if ema is not None:
            path = self.dir / f"epoch-{epoch:04d}.ema.safetensors"
            if not path.is_file():
                raise ValueError(
                    f"{path}: missing; the checkpoint was written without train.ema_decay, so it cannot resume with it"
                )
            ema.load(load_file(str(path)))
        return state

    def best_path(self) -> Path | None:
        state = self.state()
        if state is None or state.get("best_epoch", 0) < 1:
            return None
        return self.dir / f"best-{state['best_epoch']:04d}.safetensors"
