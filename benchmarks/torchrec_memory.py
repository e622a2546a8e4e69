"""Memory of a sharded embedding table per process: torchrec row-wise sharding over 1 and 2 gloo
processes (``model.encoders.categorical.kind: torchrec``, issue 21; docs/distributed.md).

The table is the largest column of a ``ranker datasets synth`` config (``C1``, ``--cardinality``
ids = rows; the other 25 columns are 1/R of it at most and left out), ``dim`` 16 or 64, trained
by fbgemm's fused rowwise Adagrad (one float of state per row) behind a linear head. Each setting
runs in a fresh process tree (``torch.multiprocessing.spawn``, gloo): one training step on 4,096
random ids per rank, then every rank reports

- ``table_mb``: the bytes of the table rows it holds (its local shards) and ``state_mb`` of their
  optimizer state;
- ``rss_mb`` (``VmRSS`` after the step) and ``peak_rss_mb`` (``VmHWM``, the process's peak).

Two builds:

- ``engine``: ``ranker train``'s whole path (:class:`ranker.nn.torchrec_tables.TorchrecEmbeddings`
  declared on the meta device, :class:`ranker.distributed.sharding.ShardedTables` filling each
  rank's rows with ranker's init): build, shard, one step, then an epoch's checkpoint (the tables
  gathered on rank 0 one at a time as it streams them into safetensors, the optimizer state
  likewise), a resume from it (each rank reading its rows of the file) and the end of training
  (the tables handed back declared; rank 0 reads the checkpoint's weights and writes
  ``model.safetensors``). Besides the peak of the whole path, ``train_peak_rss_mb`` is the peak
  before the checkpoint (build and steps).
- ``meta``: a bare ``EmbeddingCollection`` declared on the meta device and sharded by
  ``DistributedModelParallel`` with torchrec's own init: the reference for build and step.

Records of the build before 2026-12-06's change (``whole``: every rank built the whole table,
then sharded it) stay in the results file as history; that build no longer exists.

Settings whose processes together would need more than ``--max-gb`` (estimated from the table
bytes) are not run; the table size at which one process runs out of this machine's memory is
COMPUTED from the measured bytes per row (``update_tables.py`` renders it). Records go to
``benchmarks/results/torchrec-memory.json`` (key ``MODE|PROCS|ROWS|DIM``). Memory only: no
timing is recorded (run it on a loaded machine if need be).

Usage::

    python benchmarks/torchrec_memory.py                         # rows 1M 10M 50M x dim 16 64, 1 and 2 processes
    python benchmarks/torchrec_memory.py --rows 100k --dims 8 --out /tmp/trm.json   # smoke: seconds
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from results_store import save_result  # type: ignore[import-not-found]  # noqa: E402

from ranker.data.synth import parse_count

HERE = Path(__file__).parent
MB = 1024 * 1024


def _status() -> dict[str, float]:
    """VmRSS and VmHWM of this process, MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _rank(rank: int, procs: int, port: int, mode: str, rows: int, dim: int, folder: str) -> None:
    """One rank: build, shard, one step; its memory as JSON in FOLDER/rank-R.json."""
    import torch
    import torch.distributed as dist
    from torch import nn

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=procs)
    before = _status()["VmRSS"]
    torch.manual_seed(0)
    ending = None
    if mode == "engine":
        from ranker.distributed.sharding import ShardedTables
        from ranker.nn.embeddings import CategoricalFields
        from ranker.nn.torchrec_tables import TableTraining, TorchrecEmbeddings

        class Model(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                fields = CategoricalFields({"C1": "C1"}, {}, {"C1": rows})
                self.emb = TorchrecEmbeddings(fields, dim, TableTraining(sharding="row_wise", lr=0.01))
                self.head = nn.Linear(dim, 1)

            def forward(self, ids: torch.Tensor) -> torch.Tensor:
                return self.head(self.emb([ids])[0]).squeeze(-1)

        model = Model()
        tables = ShardedTables(model, model, 0.01, torch.device("cpu"))
        step, sharded, fused = tables.dmp, model.emb.collection, tables.dmp.fused_optimizer
        ending = (model, tables)
    else:
        step, sharded, fused = _meta_model(rows, dim, procs)
    ids = torch.randint(1, rows, (4096,), generator=torch.Generator().manual_seed(rank))
    step(ids).pow(2).mean().backward()
    memory = _status()
    table = sum(s.tensor.numel() * s.tensor.element_size() for s in _shards(sharded.state_dict()))
    state = sum(s.tensor.numel() * s.tensor.element_size() for s in _shards(_optimizer_states(fused)))
    result = {
        "rank": rank,
        "table_mb": table / MB,
        "state_mb": state / MB,
        "rss_before_mb": before,
        "rss_mb": memory["VmRSS"],
        "peak_rss_mb": memory["VmHWM"],
    }
    if ending is not None:  # an epoch's checkpoint, a resume and the end of training, as the engine does them
        from ranker.train.checkpoint import load_weights, save_tensors, save_weights, take_part

        model, tables = ending
        result["train_peak_rss_mb"] = memory["VmHWM"]
        path, state = Path(folder) / "epoch.safetensors", Path(folder) / "epoch.tables.safetensors"
        weights, optimizer = tables.lazy_state(), tables.lazy_optimizer_state()
        if rank == 0:  # the tables gathered one at a time as they are written
            save_tensors(weights, path)
            save_tensors(optimizer, state)
        else:
            take_part(weights)
            take_part(optimizer)
        del weights, optimizer
        dist.barrier()
        tables.load_file(path)  # a resume: each rank reads its rows
        tables.load_optimizer_file(state)
        tables.unshard()
        dist.barrier()
        if rank == 0:  # the selected weights, whole, and model.safetensors
            load_weights(model, path)
            save_weights(model, Path(folder) / "model.safetensors")
        result["peak_rss_mb"] = _status()["VmHWM"]
    (Path(folder) / f"rank-{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def _meta_model(rows: int, dim: int, procs: int) -> tuple[Any, Any, Any]:
    """The table declared on the meta device; DMP materialises each rank's rows only."""
    import torch
    import torch.distributed as dist
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torch import nn
    from torchrec.distributed.embedding import EmbeddingCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.modules.embedding_configs import EmbeddingConfig
    from torchrec.modules.embedding_modules import EmbeddingCollection
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            config = EmbeddingConfig(name="C1", embedding_dim=dim, num_embeddings=rows, feature_names=["C1"])
            self.collection = EmbeddingCollection(tables=[config], device=torch.device("meta"))
            self.head = nn.Linear(dim, 1)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            kjt = KeyedJaggedTensor.from_lengths_sync(
                keys=["C1"], values=ids, lengths=torch.tensor([len(ids)], dtype=torch.int32)
            )
            return self.head(self.collection(kjt)["C1"].values()).squeeze(-1)

    model = Model()
    sharders: list[Any] = [
        EmbeddingCollectionSharder(
            fused_params={"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": 0.01}
        )
    ]
    constraints = {"C1": ParameterConstraints(sharding_types=["row_wise"])}
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=procs, compute_device="cpu"), constraints=constraints
    )
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(model, device=torch.device("cpu"), plan=plan, sharders=sharders)
    return dmp, model.collection, dmp.fused_optimizer


def _shards(state: dict[str, Any]) -> list[Any]:
    return [s for v in state.values() if hasattr(v, "local_shards") for s in v.local_shards()]


def _optimizer_states(fused: Any) -> dict[str, Any]:
    state = fused.state_dict()["state"]
    return {f"{p}/{k}": v for p, values in state.items() for k, v in values.items()}


def child(mode: str, procs: int, rows: int, dim: int) -> None:
    """Spawn the ranks of one setting; print their reports as one JSON line."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_rank, args=(procs, port, mode, rows, dim, folder), nprocs=procs, join=True)
        ranks = [json.loads((Path(folder) / f"rank-{r}.json").read_text()) for r in range(procs)]
    print(json.dumps(ranks))


def estimate_gb(mode: str, procs: int, rows: int, dim: int) -> float:
    """What the setting's processes need together at their peak, roughly: a shard per rank and a
    whole table more on rank 0 while it writes the checkpoint and at the end (engine; counted on
    every rank, to be safe), or the shards (meta), plus ~0.6 GB of runtime per process."""
    table = rows * dim * 4 / 1024**3
    per_rank = 1.2 * table + table / procs if mode == "engine" else table / procs
    return procs * (per_rank + 0.6)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=["1M", "10M", "50M"], help="table rows (the C1 cardinality)")
    p.add_argument("--dims", type=int, nargs="+", default=[16, 64])
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--modes", nargs="+", choices=["engine", "meta"], default=["engine", "meta"])
    p.add_argument("--max-gb", type=float, default=11.0, help="skip settings estimated above this (all processes)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "torchrec-memory.json")
    p.add_argument("--child", nargs=4, metavar=("MODE", "PROCS", "ROWS", "DIM"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        mode, procs, rows, dim = args.child
        child(mode, int(procs), int(rows), int(dim))
        return
    for rows in [parse_count(r, "--rows") for r in args.rows]:
        for dim in args.dims:
            for mode in args.modes:
                for procs in args.procs:
                    need = estimate_gb(mode, procs, rows, dim)
                    if need > args.max_gb:
                        print(f"{mode} {procs} x {rows:,} x {dim}: ~{need:.1f} GB > --max-gb, not run", flush=True)
                        continue
                    cmd = [sys.executable, __file__, "--child", mode, str(procs), str(rows), str(dim)]
                    env = {**os.environ, "OMP_NUM_THREADS": "1"}
                    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if done.returncode != 0:
                        print(done.stderr[-4000:], file=sys.stderr)
                        raise SystemExit(f"{mode} {procs} x {rows} x {dim} failed (exit {done.returncode})")
                    ranks = json.loads(done.stdout.strip().splitlines()[-1])
                    result = {"mode": mode, "procs": procs, "rows": rows, "dim": dim, "sharding": "row_wise"}
                    result["ranks"] = ranks
                    save_result(args.out, f"{mode}|{procs}|{rows}|{dim}", result, name=mode, seed=0, protocol="synth")
                    worst = max(ranks, key=lambda r: r["peak_rss_mb"])
                    print(
                        f"{mode} {procs} x {rows:,} x {dim}: table {worst['table_mb']:.0f} MB/rank, "
                        f"rss {worst['rss_mb'] / 1024:.2f} GB, peak {worst['peak_rss_mb'] / 1024:.2f} GB per rank",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
