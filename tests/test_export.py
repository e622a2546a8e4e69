"""`ranker export`: the exported ranker (TransAct history + DCN-V2) equals eager on real rows.

One tiny run trained end to end on RK-ML100K (5 steps) is exported to both formats; real test
rows, encoded by the run's own Preprocessor, at a batch size other than the one traced and at a
shorter history length, give the eager outputs within 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ranker.cli import main
from ranker.config.schema import MeanPoolHistory, UnifiedEncoder
from ranker.data.preprocess import Preprocessor
from ranker.errors import ConfigError
from ranker.models import build_model
from ranker.models.registry import categorical_ids
from ranker.ranking.run import PreparedData, encode, load_run, resolve_data
from ranker.run_manifest import seal_run
from ranker.serving.export import export_model, export_run, history_lengths, input_specs
from ranker.tasks import TaskSpec

CONFIG = Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "best-rk-ml100k.yaml"
TINY = [
    "train.epochs=1",
    "train.max_steps_per_epoch=5",
    "train.batch_size=256",
    "train.progress=false",
    "model.interaction.kind=cross",  # DCN-V2 under the MLP, to export the cross network too
    "model.interaction.num_layers=2",
    "model.history.time_encoding=true",  # the times input is read too
    # narrow, so that evaluating the three splits (50k rows each) stays cheap
    "model.encoders.categorical.dim=8",
    "model.history.action_dim=4",
    "model.history.num_layers=1",
    "model.history.ff_dim=16",
    "model.backbone.hidden=[32]",
]
ROWS = 37  # export traces 4 rows: another batch size proves the batch dimension dynamic
ATOL = 1e-5


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("export") / "run"
    argv = ["train", str(CONFIG), "--out", str(run_dir)]
    for override in TINY:
        argv += ["--set", override]
    assert main(argv) == 0
    return run_dir


@pytest.fixture(scope="module")
def rows(run: Path) -> tuple[list[tuple[torch.Tensor, ...]], np.ndarray]:
    """Real test rows as positional inputs (full and shortest history) and the eager outputs."""
    cfg, model, pre = load_run(run)
    data, tables = resolve_data(cfg.data)
    tables["test"] = tables["test"].slice(0, ROWS)
    batch = encode(PreparedData(data, tables, pre), "test").tensors
    specs, lengths = input_specs(model, pre), history_lengths(model, pre)
    args = tuple(batch[s.name] for s in specs)
    (lo, hi) = lengths["history_len"]
    assert lo < hi  # the history length is dynamic for this run
    short = tuple(x[:, -lo:] if s.name.startswith("hist/") else x for x, s in zip(args, specs, strict=True))
    with torch.no_grad():
        eager = TaskSpec.from_tasks(pre.tasks).outputs(model({s.name: x for s, x in zip(specs, args, strict=True)}))
    assert eager.shape == (ROWS, 2) and bool(batch["hist/history/mask"].any())
    return [args, short], eager.numpy()


def test_pt2_equals_eager_on_real_rows(run: Path, rows: tuple[list[tuple[torch.Tensor, ...]], np.ndarray]) -> None:
    out = run / "exported" / "ranker.pt2"
    assert main(["export", str(run), "--format", "pt2", "--out", str(out)]) == 0
    program = torch.export.load(out).module()
    inputs, eager = rows
    for args in inputs:
        with torch.no_grad():
            got = program(*args).numpy()
        np.testing.assert_allclose(got, eager, rtol=0, atol=ATOL)
    doc = json.loads(out.with_name("ranker.pt2.inputs.json").read_text())
    assert doc["inputs"][0] == {"name": "cat/user_id", "dtype": "int64", "shape": ["batch"]}
    assert doc["output"]["tasks"] == ["watch", "like"] and doc["output"]["values"] == ["probability"] * 2
    # above TransAct's cut (max_len 10, the slice guards L != 10) up to the preprocessor's 50
    assert doc["dynamic"] == {"batch": [1, None], "history_len": [11, 50]}


def test_onnx_equals_eager_on_real_rows(run: Path, rows: tuple[list[tuple[torch.Tensor, ...]], np.ndarray]) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    result = export_run(run, "onnx")  # default path: RUN/model.onnx
    assert result["path"] == str(run / "model.onnx") and result["max_abs_diff"] <= ATOL
    onnx.checker.check_model(result["path"], full_check=True)
    session = _session(ort, result["path"])
    names = [i["name"] for i in json.loads(Path(result["inputs"]).read_text())["inputs"]]
    assert [i.name for i in session.get_inputs()] == names
    inputs, eager = rows
    for args in inputs:
        got = session.run(None, {n: x.numpy() for n, x in zip(names, args, strict=True)})[0]
        np.testing.assert_allclose(got, eager, rtol=0, atol=ATOL)


def test_mean_pool_history_exports(run: Path, rows: tuple[list[tuple[torch.Tensor, ...]], np.ndarray]) -> None:
    """Another history encoder on the run's preprocessing (fresh weights): its recent window is a
    slice too, which the dynamic length's range starts above."""
    cfg, _, pre = load_run(run)
    torch.manual_seed(0)
    model = build_model(cfg.model.model_copy(update={"history": MeanPoolHistory(recent=4)}), pre.layout()).eval()
    out = export_model(model, pre, "pt2", run / "mean.pt2")
    assert json.loads(Path(out["inputs"]).read_text())["dynamic"]["history_len"] == [5, 50]
    program = torch.export.load(out["path"]).module()
    specs = input_specs(model, pre)
    for args in rows[0]:
        with torch.no_grad():
            eager = TaskSpec.from_tasks(pre.tasks).outputs(model({s.name: x for s, x in zip(specs, args, strict=True)}))
            np.testing.assert_allclose(program(*args).numpy(), eager.numpy(), rtol=0, atol=ATOL)


def test_hashed_unified_embeddings_export_to_onnx(run: Path) -> None:
    """Unified embeddings: raw ids hashed by splitmix64 in int64 and gathered by ``gather_rows``
    (a custom autograd Function, traced through its forward) give eager's outputs in onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    cfg, _, _ = load_run(run)
    encoders = cfg.model.encoders.model_copy(update={"categorical": UnifiedEncoder(dim=8, probes=2)})
    model_cfg = cfg.model.model_copy(update={"encoders": encoders})
    data, tables = resolve_data(cfg.data)
    pre = Preprocessor.for_data(data, ids=categorical_ids(model_cfg)).fit(tables["train"].slice(0, 5000))
    tables["test"] = tables["test"].slice(0, ROWS)
    batch = encode(PreparedData(data, tables, pre), "test").tensors
    torch.manual_seed(0)
    model = build_model(model_cfg, pre.layout()).eval()
    assert pre.ids == "hash"
    out = export_model(model, pre, "onnx", run / "unified.onnx")
    specs = input_specs(model, pre)
    with torch.no_grad():
        eager = TaskSpec.from_tasks(pre.tasks).outputs(model({s.name: batch[s.name] for s in specs})).numpy()
    session = _session(ort, out["path"])
    got = session.run(None, {s.name: batch[s.name].numpy() for s in specs})[0]
    np.testing.assert_allclose(got, eager, rtol=0, atol=ATOL)


def _session(ort: Any, path: str) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the test machine's cores are shared
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kind", ["retrieval", "generative"])
def test_other_families_are_refused_by_name(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.yaml").write_text(f"kind: {kind}\n")
    seal_run(tmp_path, kind)  # a finished run (its other files do not matter here)
    with pytest.raises(ConfigError, match=f"a {kind} run; export supports ranking runs"):
        export_run(tmp_path, "pt2")
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"a {kind} run; export supports ranking runs (the feature ranker)")


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--format 'tflite'"):
        export_run(tmp_path, "tflite")
