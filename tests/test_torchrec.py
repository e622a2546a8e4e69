"""Sharded embedding tables (``model.encoders.categorical.kind: torchrec``, optional extra).

- Two gloo processes, row-wise and table-wise: the sharded model's outputs on each rank's rows
  equal the unsharded model's with the same weights (1e-6); after one step the dense gradients
  equal one process's on the global batch and every table equals one rowwise-Adagrad step on the
  unsharded gradient, computed by hand (fbgemm's ``EXACT_ROWWISE_ADAGRAD``:
  ``G_r += mean_j g_rj²; w_r -= lr · g_r / (√G_r + eps)``).
- Checkpoints: the tables saved whole from the sharded model load into an unsharded one (same
  outputs), and unsharded weights load into the sharded model (same outputs).
- ``ranker train`` with ``kind: torchrec`` on 1 process and on 2 (torchrun, row-wise): the same
  epoch losses and validation metrics within test_distributed's bounds; a 2-process run stopped
  after epoch 1 resumes to the uninterrupted run; ``ranker evaluate`` loads its weights unsharded.
- Without torchrec, ``kind: torchrec`` is a one-line ConfigError with the install command.
"""

from __future__ import annotations

import builtins
import copy
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from pydantic import ValidationError
from safetensors.torch import load_file
from test_distributed import RANKING, _log, _ok, _ranking_data, _train, assert_same_run
from torch import nn
from torch.multiprocessing.spawn import ProcessExitedException

from ranker.cli import main
from ranker.config import load_config
from ranker.errors import ConfigError
from ranker.models.registry import categorical_ids
from ranker.nn.embeddings import CategoricalFields, UnifiedEmbeddings
from ranker.nn.torchrec_tables import INSTALL, TableTraining, UnifiedLayout, init_rows, require_torchrec
from ranker.ranking.run import check_torchrec
from ranker.train.checkpoint import load_weights, save_tensors, take_part

pytest.importorskip("torchrec")

from ranker.distributed.sharding import ShardedTables  # noqa: E402
from ranker.nn.torchrec_tables import TorchrecEmbeddings  # noqa: E402

FIELDS = CategoricalFields({"user": "user", "item": "item"}, {"tags": "item"}, {"user": 11, "item": 7})
LR, EPS = 0.1, 1e-8


class _Tiny(nn.Module):
    """Two categorical fields and a bag over the item table (which the item field shares), a linear
    head; `table` ``unified``: the three share one hashed table of 18 rows × 4 (two probes each;
    fbgemm's kernels want widths that are multiples of 4)."""

    def __init__(self, sharding: str, table: str = "per_feature") -> None:
        super().__init__()
        shared = UnifiedLayout(probes=2, memory=0.5) if table == "unified" else None
        dim = 8 if shared else 4
        self.emb = TorchrecEmbeddings(FIELDS, dim, TableTraining(sharding=sharding, lr=LR, eps=EPS), shared)
        self.head = nn.Linear(3 * dim, 1)

    def forward(self, ids: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        fields = self.emb([ids[:, 0], ids[:, 1]], [(tags, tags != 0)])
        return self.head(torch.cat(fields, dim=-1)).squeeze(-1)  # (B,)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """8 rows: ids (8, 2), tags (8, 3) with padding, targets (8,); rank r takes rows r::2."""
    g = torch.Generator().manual_seed(3)
    ids = torch.stack([torch.randint(0, 11, (8,), generator=g), torch.randint(0, 7, (8,), generator=g)], dim=1)
    ids[0] = 0  # padding rows are looked up as zeros
    tags = torch.randint(0, 7, (8, 3), generator=g)
    return ids, tags, torch.randn(8, generator=g)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _gathered(tables: ShardedTables, path: Path) -> dict[str, torch.Tensor]:
    """The sharded model's tensors written whole the way a checkpoint is (rank 0 writes, gathering
    each table as it reaches it; the other ranks take part), read back on rank 0 ({} elsewhere)."""
    state = tables.lazy_state()
    if dist.get_rank() == 0:
        save_tensors(state, path)
        return load_file(str(path))
    take_part(state)
    return {}


def _rowwise_adagrad(weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """One step from zero state: G_r = mean_j g_rj², w_r − lr · g_r / (√G_r + eps)."""
    state = grad.pow(2).mean(dim=1, keepdim=True)  # (V, 1)
    return weight - LR * grad / (state.sqrt() + EPS)


def _ranks(rank: int, sharding: str, table: str, folder: str) -> None:
    # a file store, not a TCP port: no port another process could take between choice and use
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = _Tiny(sharding, table)  # the same weights on both ranks (same seed)
        reference = copy.deepcopy(model)
        ids, tags, y = _batch()
        mine = slice(rank, None, 2)
        tables = ShardedTables(model, model, LR, torch.device("cpu"))
        kinds = {s.sharding_type for plan in tables.plan.plan.values() for s in plan.values()}  # type: ignore[attr-defined]
        assert kinds == {sharding}

        out = tables(ids[mine], tags[mine])  # forward through DMP: sharded lookups, DDP head
        torch.testing.assert_close(out, reference(ids[mine], tags[mine]), rtol=0, atol=1e-6)

        ((out - y[mine]) ** 2).mean().backward()  # DDP averages the head; the tables' gradient / 2
        ((reference(ids, tags) - y) ** 2).mean().backward()  # one process, the global batch
        for p, q in zip(tables.dense_parameters(), reference.head.parameters(), strict=True):
            assert p.grad is not None and q.grad is not None
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7)

        full = _gathered(tables, Path(folder) / f"{sharding}.safetensors")  # rank 0: every table whole
        if rank == 0:
            for name in reference.emb.names:
                key = f"emb.collection.embeddings.{name}.weight"
                weight, grad = reference.emb.weight(name), reference.emb.weight(name).grad
                assert grad is not None and (table == "unified" or grad[0].abs().sum() == 0)  # padding: never
                torch.testing.assert_close(full[key], _rowwise_adagrad(weight.detach(), grad), rtol=0, atol=1e-6)
        dist.barrier()

        mine_file = Path(folder) / f"reference-{rank}.safetensors"
        save_tensors(_weights(reference), mine_file)
        tables.load_file(mine_file)  # unsharded weights → sharded model, each rank reading its rows
        with torch.no_grad():
            torch.testing.assert_close(
                tables(ids[mine], tags[mine]), reference(ids[mine], tags[mine]), atol=1e-6, rtol=0
            )
        tables.unshard()  # handed back declared on every rank: no rows, and no fresh ones made up
        name = model.emb.names[-1]
        assert model.emb.declared and model.emb.collection.embeddings[name].weight.is_meta
        with pytest.raises(RuntimeError, match="trained sharded"):
            model.emb.weight(name)
        model.load_state_dict(_weights(reference))  # a state dict's tensors become the tables
        torch.testing.assert_close(model.emb.weight(name), reference.emb.weight(name), rtol=0, atol=0)
        dist.barrier()  # no rank tears gloo down while the other still talks
    finally:
        dist.destroy_process_group()


def _spawn_two_ranks(sharding: str, table: str, tmp_path: Path) -> Path:
    """`_ranks` on 2 spawned processes; the folder they wrote to.

    Known intermittent crash, not understood yet: about 2 spawns in 20 on this machine, one rank
    aborts right after building DistributedModelParallel ("terminate called without an active
    exception", SIGABRT: a native thread destroyed while joinable), before any assertion. Such an
    abort, and only it, is retried once with a fresh store and reported as a warning; a failed
    assertion (raised in the child) or a second abort fails the test."""
    for attempt in range(2):
        folder = tmp_path / f"attempt-{attempt}"
        folder.mkdir()
        try:
            mp.spawn(_ranks, args=(sharding, table, str(folder)), nprocs=2, join=True)
            return folder
        except ProcessExitedException as e:
            if e.signal_name != "SIGABRT" or attempt == 1:
                raise
            warnings.warn(f"torchrec 2-process test: a rank aborted ({e}); retrying once", stacklevel=1)
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("sharding", "table"), [("row_wise", "per_feature"), ("table_wise", "per_feature"), ("row_wise", "unified")]
)
def test_sharded_tables_match_the_unsharded_model(sharding: str, table: str, tmp_path: Path) -> None:
    folder = _spawn_two_ranks(sharding, table, tmp_path)

    # the whole tables rank 0 saved load into an unsharded model: its outputs are the stepped ones'
    torch.manual_seed(0)
    model = _Tiny(sharding, table)
    saved = load_file(str(folder / f"{sharding}.safetensors"))
    load_weights(model, folder / f"{sharding}.safetensors")
    name = model.emb.names[0]
    assert model.emb.weight(name).shape == {"per_feature": (11, 4), "unified": (18, 4)}[table]
    torch.testing.assert_close(model.emb.weight(name), saved[f"emb.collection.embeddings.{name}.weight"])


def test_one_process_runs_the_same_path_on_a_world_of_one() -> None:
    torch.manual_seed(0)
    model = _Tiny("row_wise")
    reference = copy.deepcopy(model)
    ids, tags, y = _batch()
    tables = ShardedTables(model, model, LR, torch.device("cpu"))
    try:
        ((tables(ids, tags) - y) ** 2).mean().backward()
        ((reference(ids, tags) - y) ** 2).mean().backward()
        full = _gathered(tables, Path(tempfile.mkdtemp()) / "gathered.safetensors")
    finally:
        tables.unshard()  # destroys the process group of one
    assert not dist.is_initialized()
    grad = reference.emb.weight("item").grad
    assert grad is not None
    expected = _rowwise_adagrad(reference.emb.weight("item").detach(), grad)
    torch.testing.assert_close(full["emb.collection.embeddings.item.weight"], expected, rtol=0, atol=1e-6)
    load_weights(model, _saved(full))  # the trained rows come back from the saved tables
    torch.testing.assert_close(model.emb.weight("item"), full["emb.collection.embeddings.item.weight"], rtol=0, atol=0)


def _saved(state: dict[str, torch.Tensor]) -> Path:
    path = Path(tempfile.mkdtemp()) / "weights.safetensors"
    save_tensors(state, path)
    return path


def test_declared_tables_hold_no_rows_and_every_way_in_gives_the_same_rows() -> None:
    """Built declared (meta, no memory); a forward allocates the whole tables with init_rows; a
    shard of one process is filled with the same rows; a loaded state dict becomes the tables."""
    torch.manual_seed(0)
    model = _Tiny("row_wise")
    assert model.emb.declared and all(p.is_meta for p in model.emb.parameters())
    model.to(torch.device("cpu"))  # moving declared tables is a no-op, not an error
    twin = copy.deepcopy(model)
    ids, tags, _ = _batch()
    out = model(ids, tags)  # allocates: row 0 zero, the rest N(0, 0.05²) drawn per block of rows
    weight = model.emb.weight("item")
    assert not model.emb.declared and weight.shape == (7, 4) and weight[0].abs().sum() == 0
    torch.testing.assert_close(weight, model.emb.initial_rows("item", 0, 7), rtol=0, atol=0)
    assert 0.01 < weight[1:].std().item() < 0.12
    tables = ShardedTables(twin, twin, LR, torch.device("cpu"))  # the twin's shard: the same rows
    try:
        torch.testing.assert_close(tables(ids, tags), out, rtol=0, atol=1e-6)
        full = _gathered(tables, Path(tempfile.mkdtemp()) / "gathered.safetensors")
    finally:
        tables.unshard()
    loaded = _Tiny("row_wise")
    load_weights(loaded, _saved(full))
    assert loaded.emb.weight("item").data_ptr() != 0 and not loaded.emb.declared
    torch.testing.assert_close(loaded(ids, tags), out, rtol=0, atol=1e-6)


def test_init_rows_of_a_shard_are_the_whole_tables_rows_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ranker.nn.torchrec_tables.INIT_BLOCK", 4)  # blocks of 4 rows: shards cross them
    whole = init_rows(3, 1, 0, 11, 11, 2)
    for start, stop in [(0, 1), (1, 4), (3, 9), (8, 11), (5, 5)]:
        torch.testing.assert_close(init_rows(3, 1, start, stop, 11, 2), whole[start:stop], rtol=0, atol=0)
    assert not torch.equal(init_rows(3, 2, 0, 11, 11, 2), whole)  # another table, other rows
    with pytest.raises(ValueError, match=r"rows \[9, 12\) are not inside a table of 11 rows"):
        init_rows(3, 1, 9, 12, 11, 2)


def test_lookup_of_any_shape_and_prefetched_lookups() -> None:
    torch.manual_seed(0)
    enc = TorchrecEmbeddings(FIELDS, 4)
    ids = torch.tensor([[0, 3], [5, 0]])
    vectors = enc.lookup("item", ids)  # (2, 2, 4)
    assert vectors.shape == (2, 2, 4)
    torch.testing.assert_close(vectors[0, 1], enc.weight("item")[3])
    assert vectors[0, 0].abs().sum() == 0 and vectors[1, 1].abs().sum() == 0
    history = torch.tensor([[1, 2, 0]])
    enc.prefetch([("item", history)])
    enc([torch.tensor([4]), torch.tensor([6])], [(torch.tensor([[2, 0]]), torch.tensor([[True, False]]))])
    fetched = enc.lookup("item", history)  # answered from the forward's call (same tensor object)
    assert fetched.grad_fn is not None and not enc._fetched
    torch.testing.assert_close(fetched, enc.embed([("item", history)])[0])


def test_the_unified_table_reads_the_rows_kind_unified_reads() -> None:
    """``table: unified`` is Unified Embedding (Coleman et al. 2023) held by torchrec: with the same
    table it gives what :class:`UnifiedEmbeddings` gives (same hashes, probes, widths, collisions)."""
    layout = UnifiedLayout(probes=2, per_feature_probes={"user": 3}, memory=0.5, seed=5)
    torch.manual_seed(0)
    enc = TorchrecEmbeddings(FIELDS, 8, unified=layout)
    ref = UnifiedEmbeddings(FIELDS, 8, probes=2, per_feature_probes={"user": 3}, memory=0.5, seed=5)
    rows = enc.configs[0].num_embeddings
    assert enc.names == ["unified"] and rows == ref.table.num_rows == 18 and enc.ids == "hash"
    assert [enc.dim_of(o) for o in ("user", "item")] == [12, 8]  # k · (dim // probes)
    with torch.no_grad():
        ref.table.weight.copy_(enc.weight("unified"))
    assert enc.weight("unified")[0].abs().sum() > 0  # no padding row in a hashed table
    ids = [torch.tensor([123456789, 0, 7]), torch.tensor([99, 3, 3])]  # raw stable ids (0 is a value)
    bags = [(torch.tensor([[5, 6, 0], [1, 0, 0], [0, 0, 0]]), torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]]).bool())]
    for got, want in zip(enc(ids, bags), ref(ids, bags), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    values = {"user": torch.arange(50), "item": torch.arange(30)}
    assert enc.collisions(values) == ref.collisions(values)


# ---------------------------------------------------------------------------- configuration
TORCHREC = {"kind": "torchrec", "dim": 4, "sharding": "row_wise", "lr": 0.05}


def _config(**train: Any) -> dict[str, Any]:
    base = copy.deepcopy(RANKING)
    base["model"]["encoders"]["categorical"] = dict(TORCHREC)
    base["train"].update(train)
    return base


def test_a_missing_extra_is_a_one_line_error_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = builtins.__import__

    def without_torchrec(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] in ("torchrec", "fbgemm_gpu"):
            raise ModuleNotFoundError(f"No module named '{name}'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_torchrec)
    with pytest.raises(ConfigError) as info:
        check_torchrec(load_config(base=_config()))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("model.encoders.categorical.kind: 'torchrec' needs the optional extra ranker[torchrec]")
    assert message.endswith(
        "install it after torch 2.13.0 with: pip install --no-deps torchrec==1.8.0 fbgemm-gpu-cpu==1.8.0 && "
        "pip install tensordict pyre-extensions torchmetrics tqdm"
    )
    assert INSTALL in message
    with pytest.raises(ConfigError, match="needs the optional extra"):
        require_torchrec()


def test_unknown_sharding_and_what_the_fused_optimizer_does_not_reach_are_refused() -> None:
    bad = _config()
    bad["model"]["encoders"]["categorical"]["sharding"] = "column_wise"
    with pytest.raises((ConfigError, ValidationError), match=r"sharding") as info:
        load_config(base=bad)
    assert "row_wise" in str(info.value) and "table_wise" in str(info.value)
    with pytest.raises(ConfigError, match=r"^train.ema_decay: with model.encoders.categorical.kind torchrec"):
        check_torchrec(load_config(base=_config(ema_decay=0.9)))
    with pytest.raises(ConfigError, match=r"^train.embedding_l2: .* set it to 0$"):
        check_torchrec(load_config(base=_config(embedding_l2=1e-4)))
    check_torchrec(load_config(base=_config()))  # the plain config passes
    stray = _config()
    stray["model"]["encoders"]["categorical"]["probes"] = 3
    with pytest.raises((ConfigError, ValidationError), match=r"probes: read only with table: unified"):
        load_config(base=stray)
    stray["model"]["encoders"]["categorical"].update(table="unified", probes=2, dim=8)
    assert categorical_ids(load_config(base=stray).model) == "hash"
    stray["model"]["encoders"]["categorical"]["dim"] = 12  # rows of width 6
    with pytest.raises((ConfigError, ValidationError), match=r"dim: the table's rows are 6 wide .* multiple of 4"):
        load_config(base=stray)


# ---------------------------------------------------------------------------- ranker train, 1 and 2 processes
@pytest.fixture(scope="module")
def torchrec_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("torchrec-ranking")
    _ranking_data(root)
    cfg = root / "torchrec.yaml"
    cfg.write_text(yaml.safe_dump(_config()))
    runs = {"one": root / "one", "two": root / "two", "resumed": root / "resumed"}
    _ok(_train(cfg, runs["one"], 1))
    _ok(_train(cfg, runs["two"], 2))
    _ok(_train(cfg, runs["resumed"], 2, "train.epochs=1"))
    _ok(_train(cfg, runs["resumed"], 2))  # resumes the sharded checkpoint after epoch 1
    return runs


def test_two_sharded_processes_match_one_process(torchrec_runs: dict[str, Path]) -> None:
    one, two = torchrec_runs["one"], torchrec_runs["two"]
    assert_same_run(one, two)
    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert w1.keys() == w2.keys() and "embeddings.collection.embeddings.item.weight" in w2  # whole tables
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=0, atol=1e-5)
    assert main(["evaluate", str(two), "--split", "valid"]) == 0  # the sharded run's weights load unsharded


def test_a_sharded_checkpoint_resumes_to_the_uninterrupted_run(torchrec_runs: dict[str, Path]) -> None:
    two, resumed = torchrec_runs["two"], torchrec_runs["resumed"]
    for a, b in zip(_log(two), _log(resumed), strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)
        assert b["valid_score"] == pytest.approx(a["valid_score"], abs=1e-6)
    w, r = load_file(str(two / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for key in w:
        torch.testing.assert_close(r[key], w[key], rtol=0, atol=1e-6)
    assert (resumed / "checkpoints" / "epoch-0002.tables.safetensors").is_file()  # the Adagrad sums, whole


def test_a_ranker_with_a_history_updates_each_table_once_per_step() -> None:
    """The history's item lookups travel with the fields' call (prefetch), so the item table, which
    embeds the candidate and the history, takes ONE fused rowwise-Adagrad step on its summed gradient."""
    from test_encoders_integration import _data_cfg, _table

    from ranker.config.schema import ModelConfig
    from ranker.data.preprocess import Preprocessor
    from ranker.data.tensors import TensorData
    from ranker.models import build_model

    pre = Preprocessor.for_data(_data_cfg()).fit(_table())
    batch = TensorData.from_encoded(pre.transform(_table())).tensors
    cfg = {"encoders": {"categorical": {**TORCHREC, "lr": LR, "eps": EPS}}, "backbone": {"dropout": 0.0}}
    torch.manual_seed(0)
    model = build_model(ModelConfig.model_validate(cfg), pre.layout())
    reference = copy.deepcopy(model)
    assert model.inputs.histories  # the item table serves the item field and the history
    tables = ShardedTables(model, model, 1e-3, torch.device("cpu"))
    try:
        tables(batch).pow(2).mean().backward()
        full = _gathered(tables, Path(tempfile.mkdtemp()) / "gathered.safetensors")
    finally:
        tables.unshard()
    reference(batch).pow(2).mean().backward()
    for owner in ("item", "user", "tags"):
        table = reference.embeddings.weight(owner)  # type: ignore[operator]
        assert table.grad is not None and table.grad.abs().sum() > 0
        expected = _rowwise_adagrad(table.detach(), table.grad)
        torch.testing.assert_close(
            full[f"embeddings.collection.embeddings.{owner}.weight"], expected, rtol=0, atol=1e-6
        )


def test_ranker_trains_and_evaluates_the_unified_table_held_by_torchrec(tmp_path: Path) -> None:
    """``table: unified`` through ``ranker train`` (one process): hashed ids, one table in the
    checkpoint, the collision report of a hashing encoder, and the run loads for ``evaluate``."""
    _ranking_data(tmp_path)
    cfg = _config()
    cfg["model"]["encoders"]["categorical"].update(table="unified", dim=8, probes=2, memory=0.5)
    path = tmp_path / "unified.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    _ok(_train(path, run, 1))
    weights = load_file(str(run / "model.safetensors"))
    tables = [k for k in weights if ".collection.embeddings." in k]
    assert tables == ["embeddings.collection.embeddings.unified.weight"]
    assert weights[tables[0]].shape[1] == 4  # dim // probes
    collisions = json.loads((run / "collisions.json").read_text())
    assert collisions["encoder"] == "TorchrecEmbeddings" and set(collisions["features"]) == {"user", "item"}
    assert _log(run)[-1]["valid_score"] > 0.5
    assert main(["evaluate", str(run), "--split", "valid"]) == 0


def test_the_sharding_module_imports_on_its_own() -> None:
    """ranker.train imports ranker.distributed.sharding (the engine shards through it), so the
    latter reads ranker.train.checkpoint only when it runs: importing it first must work."""
    done = subprocess.run([sys.executable, "-c", "import ranker.distributed.sharding"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
