"""A finished run directory as a distillation teacher: its raw outputs on a student's rows.

The student reads the same data (same dataset or files, same split) but may use other
features and another architecture. The teacher encodes the student's raw split tables with
its *own* preprocessor (so it sees exactly the inputs it was trained on) and its raw outputs
for the student's tasks are computed once per split, in evaluation mode (no dropout, no random
history masking), and cached in the student's run directory.

Why cache rather than run the teacher on the fly: the teacher's outputs in evaluation mode do
not depend on the epoch, so one pass over the training split replaces one teacher forward per
batch per epoch (E passes) at the cost of N × T floats of memory (1.6 MB per 100k rows and 4
tasks), and it lets the student train at its own speed, which is the point of distilling.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from ranker.config.schema import DataConfig
from ranker.data.sources import atomic_write_bytes
from ranker.data.tensors import TensorData
from ranker.errors import ConfigError
from ranker.train import predict


def _same_data(teacher: DataConfig, student: DataConfig) -> bool:
    keys = ("dataset", "path", "split")
    return all(getattr(teacher, k) == getattr(student, k) for k in keys)


def teacher_outputs(
    teacher_dir: Path, student: DataConfig, table: pa.Table, *, device: torch.device, batch_size: int = 8192
) -> np.ndarray:
    """Raw teacher outputs (N, T_student) for the rows of `table`, in the student's task order.
    The teacher is loaded by :func:`ranker.ranking.run.load_run` (verified against its manifest;
    ``ranker distill`` and ``train_run`` refuse a damaged teacher naming ``--teacher`` before any
    work)."""
    from ranker.ranking.run import load_run  # run.py imports this module

    teacher_dir = Path(teacher_dir)
    cfg, model, pre = load_run(teacher_dir)
    if not _same_data(cfg.data, student):
        raise ConfigError(
            f"--teacher {teacher_dir}: trained on other data ({cfg.data.dataset or cfg.data.path}); "
            "the student's data section must name the same dataset/files and split"
        )
    tasks = {t.name: (i, t) for i, t in enumerate(cfg.data.tasks)}
    cols = []
    for t in student.tasks:
        if t.name not in tasks or tasks[t.name][1].kind != t.kind:
            raise ConfigError(
                f"--teacher {teacher_dir}: has no {t.kind} task {t.name!r}; its tasks: "
                f"{[u.name for u in cfg.data.tasks]}"
            )
        cols.append(tasks[t.name][0])
    data = TensorData.from_encoded(pre.transform(table, source=f"{teacher_dir} (teacher)"))
    model.to(device)
    raw = predict(model, data, batch_size, device, outputs=lambda z: z)
    return np.ascontiguousarray(raw[:, cols], dtype=np.float32)


def cached_teacher_outputs(
    teacher_dir: Path, student: DataConfig, table: pa.Table, run_dir: Path, *, device: torch.device
) -> tuple[np.ndarray, float]:
    """:func:`teacher_outputs` of the train split, cached as ``run_dir/teacher_train.npy``.

    Returns the outputs and the seconds spent computing them (0 when read from the cache). The
    cache is reused only for the same teacher directory and row count (e.g. on resume).
    """
    npy, meta_path = run_dir / "teacher_train.npy", run_dir / "teacher_train.json"
    meta = {
        "teacher": str(Path(teacher_dir).resolve()),
        "rows": table.num_rows,
        "tasks": [t.name for t in student.tasks],
    }
    if npy.is_file() and meta_path.is_file() and json.loads(meta_path.read_text()) == meta:
        return np.load(npy), 0.0
    start = time.perf_counter()
    out = teacher_outputs(teacher_dir, student, table, device=device)
    seconds = time.perf_counter() - start
    np.save(npy, out)
    atomic_write_bytes(meta_path, json.dumps(meta).encode())
    return out, seconds
