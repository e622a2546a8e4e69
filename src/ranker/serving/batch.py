"""What a nightly job calls: top-k for many users, and scores for a file of rows, in chunks.

``ranker recommend BUNDLE users.txt --k 100 --out recs.parquet`` runs the service's two stages
(:class:`~ranker.serving.recommender.Recommender`, histories from ``--store``) for every user of
the file (one raw id per line) and writes ``user, rank, item, score`` plus one column per task.

``ranker predict RUN_OR_BUNDLE rows.parquet --out scores.parquet`` scores rows that carry the
ranker's input columns (history lists included, as in training), streamed ``--chunk`` rows at
a time: per-task probabilities and the serving score, in the input's row order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ranker.errors import ConfigError, DataError
from ranker.serving.recommender import Query, Recommender
from ranker.serving.store import EventStore, raw_id


def recommend_file(rec: Recommender, users: list[str], out: Path, *, k: int, n_candidates: int) -> int:
    """Top-`k` rows per user into `out` (parquet); the number of rows written."""
    tasks = list(rec.bundle.ranking.spec.names) if rec.bundle.ranking is not None else []
    cols: dict[str, list[Any]] = {c: [] for c in ("user", "rank", "item", "score", "fallback", *tasks)}
    for user in users:
        res = rec.recommend(Query(user=user), k=min(k, rec.num_items), n_candidates=n_candidates, exclude=[])
        for rank, row in enumerate(res["items"], 1):
            cols["user"].append(user)
            cols["rank"].append(rank)
            cols["item"].append(row["item"])
            cols["score"].append(row["score"])
            cols["fallback"].append(res["fallback"])
            for t in tasks:
                cols[t].append(row["probabilities"][t])
    pq.write_table(pa.table(cols), out)
    return len(cols["user"])


def read_users(path: Path) -> list[str]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such users file (one raw user id per line)")
    users = [raw_id(line.strip()) for line in path.read_text().splitlines() if line.strip()]
    if not users:
        raise ConfigError(f"{path}: no user ids")
    return users


@torch.inference_mode()
def predict_file(source: Path, rows: Path, out: Path, *, chunk: int = 50_000) -> int:
    """Score every row of a parquet file with a ranking run (or a bundle's ranker); the count."""
    from ranker.data.preprocess import Preprocessor
    from ranker.data.tensors import TensorData
    from ranker.ranking.run import load_run
    from ranker.tasks import TaskSpec, serving_score

    if (source / "config.yaml").is_file() or not (source / "manifest.json").is_file():  # a run directory
        from ranker.families import require_family

        require_family(source, "ranking", "", "`ranker predict` (ranker rows)")
        cfg, model, pre = load_run(source)
    else:  # a bundle: its manifest covers the ranker's files
        from ranker.serving.bundle import verify_bundle

        ranker = verify_bundle(source)["stages"].get("ranker")
        if ranker is None or ranker.get("kind", "ranking") != "ranking":
            what = "no ranker" if ranker is None else f"a {ranker['kind']} ranker as stage 2"
            raise ConfigError(
                f"{source}: a bundle with {what}; `ranker predict` scores rows of a feature ranker's table "
                "(use `ranker recommend` or POST /score)"
            )
        cfg, model, pre = load_run(source / "ranker", verify=False)
    spec = TaskSpec.from_tasks(pre.tasks)
    scoring = Preprocessor.from_state({**pre.state_dict(), "tasks": []})
    if not rows.is_file():
        raise ConfigError(f"{rows}: no such file")
    try:
        reader = pq.ParquetFile(rows)
    except pa.ArrowInvalid:
        raise DataError(f"{rows}: not a parquet file (predict reads parquet with the ranker's input columns)") from None
    writer: pq.ParquetWriter | None = None
    n = 0
    try:
        for batch in reader.iter_batches(batch_size=chunk):
            table = pa.Table.from_batches([batch])
            enc = scoring.transform(table, source=str(rows))
            probs = spec.outputs(model(TensorData.from_encoded(enc).tensors))
            score = serving_score(probs, spec, cfg.serving.weights, cfg.serving.combine)
            result = pa.table({"score": score.numpy(), **{t: probs[:, i].numpy() for i, t in enumerate(spec.names)}})
            if writer is None:
                writer = pq.ParquetWriter(out, result.schema)
            writer.write_table(result)
            n += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    return n


def open_for_batch(bundle: Path, store: EventStore | None) -> Recommender:
    from ranker.serving.bundle import load_bundle

    return Recommender(load_bundle(bundle), store)
