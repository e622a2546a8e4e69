"""Two stages (PROTOCOLS.md, TS-ML1M): stage-1 candidates re-ranked by the feature ranker, against stage 1 alone.

Usage (from the repository root; one table per dataset):
    RANKER_DATA_DIR=../shared/data RANKER_THREADS=1 python benchmarks/two_stage.py \
        --stage1 runs/ts-ml1m/hstu-large-full-r-ml1m-2021 --dataset ml-1m \
        --n 50 100 200 500 --seeds 2021 2022 2023 --ablation none no-hard no-content no-demographics \
        [--per-user 20] [--hard 8] [--sampled 2] [--history 20] [--content-dim 32] [--epochs 10] \
        [--timing --timing-users 200] [--out runs/two-stage/ml-1m] [--set train.lr=0.002] [--results-suffix=-e100]

What it does, in order (every step resumes: finished files and runs are kept in --out):
1. loads the stage-1 run from its directory (``ranker.retrieval.ensemble.load_stage1``: one run,
   or several trained on the same events as one ensemble, ``--stage1-weights``); a ``reference``
   protocol run is refused: it trained on the validation items;
2. the held-out candidates (top max(--n) of every user's validation and test query) and the
   training-prefix candidates (--per-user positions per user, drawn with ``default_rng(2021)``;
   kept in --out as ``prefix-candidates-<key>.npz``, so every later command, seed process or
   ablation over the same sealed stage 1 reads them instead of scoring them again);
3. per N (and per negative scheme: --hard/--sampled; ``no-hard``: --hard + --sampled uniform ones): the three
   stage-2 files and one declared ranking config per ablation (``ranker train`` trains it as is);
   ``valid-half`` (a row source, not an ablation: the ``none`` config) trains stage 2 on the
   validation queries instead of the training prefixes (their N candidates, as served): the
   users of even query index train, the odd ones select; test is unchanged. Stage 1 never had a
   validation target as a training target, so its score and rank on these rows are distributed
   as at test, where on training prefixes they are fitted; its validation list metrics are not
   clean (half the users trained on them), its test metrics are; ``valid-cross`` (a row source
   too) cross-fits two such rankers, one on the even and one on the odd validation queries
   (each selected on the other half): a validation query is scored by the ranker that did not
   train on it, so its list metrics (and the blend weight picked on them) are clean, and a test
   query by the mean of the two rankers' logits (``ranker.twostage.evaluate.cross_fit``): every
   validation positive trains, at twice valid-half's training cost and serving cost (not
   timed); ``tuned-cross`` (a row source too) is ``valid-cross`` with each fold fine-tuned from
   the ``none`` ranker of the same N and seed (``--init-from``; run ``none`` first): the many
   fitted training-prefix rows teach the features, the few unfitted validation rows recalibrate
   what it makes of the stage-1 score; ``unfitted`` (a row source too)
   trains stage 2 on the last K positions of every training sequence, their candidates and
   stage-1 scores from ``--unfitted``: a stage-1 run (or ensemble, weighted as ``--stage1``)
   trained with ``data.train_holdout_last: K``, so those scores are not fitted: distributed as
   the held-out queries' are, on K rows per user where ``valid-half`` has half a row (validation
   selects and test is scored as always, with the ``--stage1`` run's candidates);
   ``rank-weighted`` (a row source too) draws the hard negatives from the top N with weight
   ``r^−α`` for stage-1 rank r (``--hard-alpha`` α, default 1: about half of them from the top 10
   of 200) instead of uniformly, so the rows are contested where the top 10 is, while every rank
   of the N still gives a hard negative now and then (the N = 50 rows concentrate them too, but
   leave ranks 51–200 without any);
4. per seed × ablation: trains the config, scores the validation and test candidates, ranks the
   targets in the final list and bootstraps the difference to stage 1 alone (paired over users,
   1,000 resamples, seed 0), and a variant's list also against the ``none`` ranker's of the same N
   and seed (``vs_none_bootstrap``, added to finished records on a rerun); with --timing, times
   stage 2 per user request (1 and 2 threads), also
   for runs finished before (on an idle machine: rerun the same command with --timing).

``--apply-n M …`` ranks the top M of every held-out query with each stage 2 trained at --n, no
new training (records ``<ablation>@N<n>|N<m>|<seed>``, the table's rows "trained at N = n"):
one ranker serving several candidate counts. For M > n it is unsafe: the training rows' hard
negatives come from the top n only, so below rank n every negative is a uniform one and the
ranker learns that a candidate ranked just below n is likelier than one just above it.

``--refit RUN …`` (one per --stage1 run, same weights; ``ranker refit`` made them: the same
configs retrained with the validation items as training targets for the epoch counts validation
picked) scores the test queries with the refit stage 1 instead: its candidates, scores and
ranks make the test rows and "stage 1 alone". Nothing is trained or chosen anew: the stage-2
rankers, the validation lists and the fusion weight w are the finished --stage1 pipeline's in
the same --out (run it first); records go to their own --results-suffix, ranks to
``final_ranks-refit.npz``. A refit's scores on the validation queries carry their labels, so
validation only ever sees the --stage1 runs.

``generative`` (a variant too) trains the generative HSTU ranker instead, on the same queries as
declared files (:mod:`ranker.twostage.generative`): its lists are scored through the served
stage and, in a second row, fused with the stage-1 score (``logit(p) + w·s1``, w picked on
validation NDCG@10); the served scores are kept in the run (``lists.npz``).

Results: benchmarks/results/two-stage-<dataset><--results-suffix>.json (layout ranker-results/1), keys
``stage1|N<n>`` (stage 1 alone), ``<ablation>|N<n>|<seed>`` and ``<ablation>|N<n>|seeds`` (the
bootstrap of the seed-averaged per-user metrics). Seeds may run in parallel, one process each
(``--seeds 2022`` and ``--seeds 2023`` with the same --out and suffix): ``save_result`` locks the
file while it merges, and the same command with every seed afterwards finds them finished and
writes only the ``|seeds`` record. The table: ``update_tables.py``
(``<!-- table:two-stage-<dataset> -->``, docs/experiments/two-stage.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from results_store import load_results, save_result  # type: ignore[import-not-found]

from ranker.config import anchored, load_config, load_generative_config, load_retrieval_config
from ranker.generative.run import train_generative_run
from ranker.ranking.run import train_run
from ranker.retrieval import candidates as rc
from ranker.retrieval.ensemble import check_same_data, load_stage1
from ranker.retrieval.run import check_refit, run_views
from ranker.run_manifest import verify_run
from ranker.rundir import finished_config
from ranker.serving.generative import stage_of_run
from ranker.twostage import evaluate as ev
from ranker.twostage import generative as gen
from ranker.twostage.content import reduce_dim, title_embeddings
from ranker.twostage.dataset import ABLATIONS, heldout_table, stage2_config, stage2_tables, write_tables
from ranker.twostage.rows import check_stage1, training_rows
from ranker.twostage.side_info import side_info

#: the stage-2 variants: the config ablations, five row sources (``valid-half``, ``valid-cross``,
#: ``tuned-cross``, ``unfitted``, ``rank-weighted``: module docstring) and the generative HSTU
#: ranker as stage 2 (``generative``: :mod:`ranker.twostage.generative`)
ROW_SOURCES = ("valid-half", "valid-cross", "tuned-cross", "unfitted", "rank-weighted")  # the `none` config
CROSS_FITTED = ("valid-cross", "tuned-cross")  # two rankers, one per half of the validation queries
VARIANTS = (*ABLATIONS, *ROW_SOURCES, "generative")
# The feature ranker reads the stage-1 score already: fused again, it may need less of it (w < 0)
# or more (w > 0); 0 first, so that a tie keeps the ranker's own order.
SIGNED_BLEND_WEIGHTS = (*ev.BLEND_WEIGHTS, *(-w for w in ev.BLEND_WEIGHTS[1:]))
# rank-weighted rows drew a hard negative at stage-1 rank r with weight r^−α, which multiplies the
# odds the ranker learns at rank r by r^α: the lists are also scored logit(p) − a · log r (the
# sampling-bias correction of Yi et al., "Sampling-bias-corrected neural modeling for large
# corpus item recommendations", RecSys 2019), a picked on validation; a = α undoes it exactly
LOGQ_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)

HERE = Path(__file__).parent
DATA_SEED = 2021  # the prefix subset and the negatives: the same rows for every stage-2 seed
PROTOCOL = {
    "ml-1m": "TS-ML1M",
    "ml-100k": "TS-ML1M protocol on R-ML100K (development)",
    "beauty": "TS-ML1M protocol on R-Beauty",
}


def results_path(dataset: str, suffix: str = "") -> Path:
    """``suffix`` (--results-suffix, e.g. ``-e100``): a separate file, for another stage-1 run."""
    return HERE / "results" / f"two-stage-{dataset}{suffix}.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--stage1",
        type=Path,
        nargs="+",
        required=True,
        help="a finished retrieval run directory, or several trained on the same events (an ensemble)",
    )
    p.add_argument(
        "--unfitted",
        type=Path,
        nargs="+",
        help="the `unfitted` variant's stage 1: run(s) as --stage1 (same weights) trained with "
        "data.train_holdout_last=K; its scores of the last K positions of each training sequence are not fitted",
    )
    p.add_argument(
        "--refit",
        type=Path,
        nargs="+",
        help="the test queries' stage 1: the refits of the --stage1 runs (`ranker refit`, same order and weights); "
        "no training: the stage-2 rankers, validation lists and fusion weights are the finished --stage1 "
        "pipeline's in --out (run it first)",
    )
    p.add_argument(
        "--stage1-weights",
        type=float,
        nargs="+",
        help="with several --stage1 runs: one weight each, score = Σ w_k · score_k (default 1 each)",
    )
    p.add_argument("--dataset", required=True, choices=sorted(PROTOCOL), help="side-information reader")
    p.add_argument("--n", type=int, nargs="+", default=[50, 100, 200, 500])
    p.add_argument(
        "--apply-n",
        type=int,
        nargs="+",
        default=[],
        metavar="M",
        help="also rank the top M candidates of every held-out query with each stage 2 trained at --n "
        "(no new training): the list at N = M from a ranker trained on another N's rows",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[2021, 2022, 2023])
    p.add_argument("--ablation", nargs="+", default=["none"], choices=VARIANTS)
    p.add_argument("--per-user", type=int, default=20, help="training prefixes per user (0: all)")
    p.add_argument("--min-prefix", type=int, default=1)
    p.add_argument("--hard", type=int, default=8, help="hard negatives per prefix (from its stage-1 top-N)")
    p.add_argument("--sampled", type=int, default=2, help="uniform negatives per prefix")
    p.add_argument(
        "--hard-alpha",
        type=float,
        default=1.0,
        help="the rank-weighted variant: hard negatives drawn with weight rank^-alpha (> 0)",
    )
    p.add_argument(
        "--history", type=int, default=20, help="history items kept per row (TransAct reads the last 20 at most)"
    )
    p.add_argument("--content-dim", type=int, default=32, help="title-embedding PCA width (0: no content)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--timing", action="store_true", help="time stage 2 per request (1 and 2 threads)")
    p.add_argument("--timing-users", type=int, default=200)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--out", type=Path, help="default runs/two-stage/<dataset>")
    p.add_argument(
        "--results-suffix",
        default="",
        help="a separate results file (two-stage-<dataset><suffix>.json): one file per stage-1 run",
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    if args.refit and (len(args.refit) != len(args.stage1) or not args.results_suffix):
        p.error("--refit: one refit run per --stage1 run, and a --results-suffix of its own")
    if args.refit and (args.apply_n or "generative" in args.ablation or args.timing):
        p.error("--refit: scores the feature rankers' test lists only (no --apply-n, generative or --timing)")
    if not args.hard_alpha > 0:
        p.error(f"--hard-alpha: must be > 0 (0 is the uniform draw of the `none` rows), got {args.hard_alpha}")
    return args


def content_vectors(side: Any, dim: int) -> np.ndarray | None:
    if not dim:
        return None
    if side.items.column("title").null_count == side.items.num_rows:
        raise SystemExit("error: --content-dim: this dataset's items have no titles to embed; use --content-dim 0")
    return reduce_dim(title_embeddings(side.items.column("title").to_pylist()), dim)


def unfitted_stage1(args: argparse.Namespace, data: Any, serving: Any, n_max: int) -> dict[str, Any]:
    """The --unfitted stage 1 and its top-N for the last K positions of every training sequence
    (K = its data.train_holdout_last, the positions it never trained on)."""
    if not args.unfitted:
        raise SystemExit("--ablation unfitted needs --unfitted RUN [RUN ...]")
    holdouts = sorted(
        {finished_config(r, load_retrieval_config, "retrieval").data.train_holdout_last for r in args.unfitted}
    )
    if len(holdouts) != 1 or holdouts[0] == 0:
        raise SystemExit(f"--unfitted: every run needs the same data.train_holdout_last > 0, got {holdouts}")
    k = holdouts[0]
    cfg, model, theirs = load_stage1(args.unfitted, args.stage1_weights)
    check_stage1(cfg)
    check_same_data(serving, theirs, args.stage1[0], args.unfitted[0])
    user, position = rc.last_queries(data.train.lengths(), k)
    prefix = cached_prefix_candidates(args.out, args.unfitted, args.stage1_weights, model, data, user, position, n_max)
    print(f"unfitted stage 1 (last {k} positions): {len(prefix):,} queries, recall@{n_max} {prefix.recall():.4f}")
    return {"model": model, "prefix": prefix, "holdout": k}


def cached_prefix_candidates(
    out: Path,
    runs: list[Path],
    weights: list[float] | None,
    model: Any,
    data: Any,
    user: np.ndarray,
    position: np.ndarray,
    n_max: int,
) -> rc.Candidates:
    """The stage-1 top-`n_max` of the training-prefix queries (`user`, `position`), kept in
    `out` (``prefix-candidates-<key>.npz``) and read back by the next command over the same
    stage 1: scoring 120 k ML-1M prefixes takes minutes, and every ablation, seed process and
    rerun needs the same lists. The key hashes each run's manifest digest (its weights and
    config), the ensemble weights, the queries and `n_max`; an unsealed run is never cached.
    The library's scoring code is not in the key: after changing it, delete the file."""
    digests = [(verify_run(Path(r)) or {}).get("digest") for r in runs]
    if not all(digests):
        return rc.prefix_candidates(model, data.train, user, position, n_max, max_len=data.max_len, progress=True)
    h = hashlib.sha256(json.dumps([digests, weights, n_max]).encode())
    h.update(np.ascontiguousarray(user, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(position, dtype=np.int64).tobytes())
    path = Path(out) / f"prefix-candidates-{h.hexdigest()[:16]}.npz"
    if path.is_file():
        print(f"stage-1 prefixes: read from {path}", flush=True)
        return rc.Candidates.load(path)
    cands = rc.prefix_candidates(model, data.train, user, position, n_max, max_len=data.max_len, progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    cands.save(path)
    return cands


def stage1_name(args: argparse.Namespace) -> str:
    """The stage-1 run, or the ensemble's runs and weights, as the results record them."""
    if len(args.stage1) == 1 and not args.stage1_weights:
        return str(args.stage1[0])
    weights = args.stage1_weights or [1.0] * len(args.stage1)
    return " + ".join(f"{w:g} × {r}" for w, r in zip(weights, args.stage1, strict=True))


def stage1_record(cands: dict[str, rc.Candidates], prefix: rc.Candidates | None, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "train_prefix_recall": None if prefix is None else prefix.top(n).recall()}
    for split, c in cands.items():
        top = c.top(n)
        ranks = ev.final_ranks(top.scores.astype(np.float64), top)[1]
        out[split] = {"recall": top.recall(), **ev.list_metrics(ranks, n)}
    return out


def build_data(
    args: argparse.Namespace,
    ctx: dict[str, Any],
    n: int,
    hard: int,
    sampled: int,
    *,
    unfitted: bool = False,
    train: bool = True,
    hard_alpha: float = 0.0,
) -> dict[str, Path]:
    """The three stage-2 files of N (kept in --out; rebuilt only when missing). `unfitted`: the
    training rows come from the --unfitted run's last-K prefixes (scored by it), not from the
    training prefixes of the stage-1 run. Without `train`: the valid and test files only, to
    score a stage 2 trained at another N (--apply-n). `hard_alpha` > 0: the hard negatives are
    weighted by stage-1 rank (``rank-weighted``)."""
    source = ctx["unfitted"] if unfitted else ctx
    tag = f"unfitted{source['holdout']}" if unfitted else f"pu{args.per_user}"
    tag += f"-alpha{hard_alpha:g}" if hard_alpha else ""
    name = f"data-N{n}-hard{hard}-sampled{sampled}-{tag}" if train else f"heldout-N{n}"
    folder = args.out / f"{name}-h{args.history}"
    files = {s: folder / f"{s}.parquet" for s in (("train", "valid", "test") if train else ("valid", "test"))}
    if args.refit and train:  # the --stage1 pipeline's rows, and the refit's test rows
        if not all(p.is_file() for p in files.values()):
            raise SystemExit(f"--refit: {folder} is missing; run the same command without --refit first")
        return files | {"test": refit_test_rows(args, ctx, n)}
    if all(p.is_file() for p in files.values()):
        return files
    print(f"N={n}: stage-2 rows (hard {hard}, sampled {sampled})" if train else f"N={n}: held-out rows", flush=True)
    tables = stage2_tables(
        source["model"],
        ctx["data"],
        ctx["serving"],
        ctx["side"],
        prefix=source["prefix"].top(n) if train else None,
        valid=ctx["cands"]["valid"].top(n),
        test=ctx["cands"]["test"].top(n),
        hard=hard,
        sampled=sampled,
        seed=DATA_SEED,
        hard_alpha=hard_alpha,
        history=args.history,
        content=ctx["content"],
        progress=True,
    )
    write_tables(folder, tables)
    return files


def refit_test_rows(args: argparse.Namespace, ctx: dict[str, Any], n: int) -> Path:
    """--refit: the test rows of N from the refit stage 1's candidates (kept in --out)."""
    path = args.out / f"refit-test-N{n}-h{args.history}" / "test.parquet"
    if not path.is_file():
        print(f"N={n}: test rows of the refit stage 1", flush=True)
        test = ctx["cands"]["test"].top(n)
        table = heldout_table(
            test, ctx["data"], ctx["serving"], ctx["side"], history=args.history, content=ctx["content"]
        )
        write_tables(path.parent, {"test": table})
    return path


def build_generative_data(args: argparse.Namespace, ctx: dict[str, Any], n: int) -> dict[str, Path]:
    """The generative stage 2's three files of N (events, users, negatives; kept in --out)."""
    folder = args.out / f"gen-N{n}-hard{args.hard}-sampled{args.sampled}-pu{args.per_user}"
    files = {s: folder / f"{s}.parquet" for s in ("events", "users", "negatives")}
    if all(p.is_file() for p in files.values()):
        return files
    print(f"N={n}: generative stage-2 files (hard {args.hard}, sampled {args.sampled})", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    tables = gen.event_tables(ctx["data"], ctx["serving"], ctx["side"])
    train = training_rows(
        ctx["model"], ctx["data"], ctx["prefix"].top(n), hard=args.hard, sampled=args.sampled, seed=DATA_SEED
    )
    held = [ctx["cands"][s].top(n) for s in ("valid", "test")]
    per_event = args.hard + args.sampled
    tables["negatives"] = gen.negatives_table(train, held, ctx["serving"], per_event=per_event, seed=DATA_SEED)
    for name, table in tables.items():
        pq.write_table(table, files[name])
    return files


def run_generative(
    args: argparse.Namespace, ctx: dict[str, Any], n: int, seed: int, files: dict[str, Path]
) -> dict[str, Any]:
    """Train the generative stage 2 of N and score every validation and test list through the served path."""
    folder = files["events"].parent
    cfg_dict = gen.generative_config(
        f"two-stage-{args.dataset}-N{n}-generative",
        {k: Path(os.path.relpath(p, folder)) for k, p in files.items()},
        ctx["side"],
        per_event=args.hard + args.sampled,
        epochs=args.epochs,
    )
    config = folder / "stage2-generative.yaml"
    header = (
        f"# Generative stage 2 of two stages on {args.dataset} (N = {n}), written by benchmarks/two_stage.py\n"
        f"# Stage 1: {stage1_name(args)}\n# Command: ranker train {config} --out RUN_DIR\n"
    )
    config.write_text(header + yaml.safe_dump(cfg_dict, sort_keys=False))
    cfg = anchored(load_generative_config(config, [*args.overrides, f"train.seed={seed}"]), config)
    run_dir = args.out / f"N{n}" / f"generative-{seed}"
    start = time.perf_counter()
    metrics = train_generative_run(cfg, run_dir)
    record: dict[str, Any] = {
        "n": n,
        "ablation": "generative",
        "best_epoch": metrics["best_epoch"],
        "params": metrics["params"],
        "train_windows": metrics["windows"]["train"],
        "stage2_valid_auc": metrics["valid"]["click"]["auc"],
        "train_wall_s": time.perf_counter() - start,
        "overrides": args.overrides,
        "stage2_config": str(config),
    }
    lists_file = run_dir / "lists.npz"  # the served scores of every list, kept: blends and checks reuse them
    if lists_file.is_file():
        probs = dict(np.load(lists_file))
    else:
        scorer = gen.HeldOutLists(stage_of_run(run_dir), ctx["data"], ctx["serving"])
        probs = {s: scorer.scores(ctx["cands"][s].top(n)) for s in ("valid", "test")}
        np.savez(lists_file, **probs)
    ranks: dict[str, np.ndarray] = {}
    for split in ("valid", "test"):
        list_record(record, ranks, split, probs[split], ctx["cands"][split].top(n), ctx["counts"])
    record["test_bootstrap"] = ev.compare(ranks["test_two"], ranks["test_one"], n=n, resamples=args.resamples)
    blend_record(args, ctx, record, ranks, probs, n, ev.BLEND_WEIGHTS)
    np.savez(run_dir / "final_ranks.npz", **ranks)
    if args.timing:
        record["timing"] = generative_timing(args, ctx, n, run_dir)
    return record


def generative_timing(args: argparse.Namespace, ctx: dict[str, Any], n: int, run_dir: Path) -> dict[str, Any]:
    """Generative stage-2 milliseconds per request of N candidates (the served path: events to
    tokens, M-FALCON) for the first --timing-users test users."""
    scorer = gen.HeldOutLists(stage_of_run(run_dir), ctx["data"], ctx["serving"])
    c = ctx["cands"]["test"].top(n)
    users = list(range(min(args.timing_users, len(c))))
    return {
        str(t): ev.time_requests(lambda q: scorer.score(c, q), users, threads=t) | {"requests": len(users)}
        for t in (1, 2)
    }


def valid_half(files: dict[str, Path], parity: int = 0) -> dict[str, Path]:
    """``valid-half``'s stage-2 files: the validation queries with ``query % 2 == parity`` train,
    the others select (in ``valid-half/``, ``valid-half-odd/`` for parity 1, beside the N's
    files), test as it is."""
    folder = files["valid"].parent / ("valid-half" if parity == 0 else "valid-half-odd")
    out = {"train": folder / "train.parquet", "valid": folder / "valid.parquet", "test": files["test"]}
    if not (out["train"].is_file() and out["valid"].is_file()):
        table = pq.read_table(files["valid"])
        mine = pc.equal(pc.bit_wise_and(table.column("query"), 1), parity)
        folder.mkdir(exist_ok=True)
        pq.write_table(table.filter(mine), out["train"])
        pq.write_table(table.filter(pc.invert(mine)), out["valid"])
    return out


def fold_dirs(run_dir: Path, ablation: str) -> list[Path]:
    """The stage-2 run directories whose outputs make a variant's scores: a cross-fitted one's two
    folds (``fold0`` trained on the even validation queries), else the run itself."""
    return [run_dir / f"fold{k}" for k in (0, 1)] if ablation in CROSS_FITTED else [run_dir]


def variant_scores(run_dir: Path, ablation: str, table: Any, split: str) -> np.ndarray:
    """(rows,) the variant's stage-2 probability for every row of a held-out `split` table."""
    dirs = fold_dirs(run_dir, ablation)
    if len(dirs) == 1:
        return ev.stage2_scores(dirs[0], table)
    probs = [ev.stage2_scores(d, table) for d in dirs]
    return ev.cross_fit(probs, table.column("query").to_numpy(), held_out=split != "valid")


def write_config(args: argparse.Namespace, ctx: dict[str, Any], files: dict[str, Path], n: int, ablation: str) -> Path:
    folder = files["train"].parent
    cfg = stage2_config(
        f"two-stage-{args.dataset}-N{n}-{ablation}",
        {s: Path(os.path.relpath(p, folder)) for s, p in files.items()},  # resolved against the config's folder
        ctx["side"],
        times=ctx["data"].test_input.times is not None,
        content_dim=args.content_dim,
        ablation="none" if ablation in ROW_SOURCES else ablation,
        history=args.history,
        epochs=args.epochs,
    )
    path = folder / f"stage2-{ablation}.yaml"
    header = (
        f"# Stage 2 of two stages on {args.dataset} (N = {n}, ablation {ablation}), written by benchmarks/two_stage.py\n"
        f"# Stage 1: {stage1_name(args)}\n# Command: ranker train {path} --out RUN_DIR\n"
    )
    path.write_text(header + yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_one(
    args: argparse.Namespace, ctx: dict[str, Any], n: int, ablation: str, seed: int, files: dict[str, Path]
) -> dict[str, Any]:
    """Train one stage-2 config on `files` and score every validation and test query (the N's
    files: ``valid-half`` trains on part of the validation queries, ``valid-cross`` on each half
    in turn, the lists cover them all)."""
    run_dir = args.out / f"N{n}" / f"{ablation}-{seed}"
    folds = fold_dirs(run_dir, ablation)
    init = args.out / f"N{n}" / f"none-{seed}" if ablation == "tuned-cross" else None
    if init is not None and not (init / "metrics.json").is_file():
        raise SystemExit(f"--ablation tuned-cross fine-tunes {init}: run --ablation none (same N and seed) first")
    start = time.perf_counter()
    runs, configs = [], []
    for k, fold_dir in enumerate(folds):
        rows = valid_half(files, parity=k) if ablation in ("valid-half", *CROSS_FITTED) else files
        configs.append(write_config(args, ctx, rows, n, ablation))
        cfg = load_config(configs[-1], [*args.overrides, f"train.seed={seed}"])
        runs.append(train_run(cfg, fold_dir, base_dir=configs[-1].parent, init_from=init))
    record: dict[str, Any] = {
        "n": n,
        "ablation": ablation,
        "best_epoch": runs[0]["best_epoch"] if len(runs) == 1 else [m["best_epoch"] for m in runs],
        "params": runs[0]["params"],
        "train_rows": sum(m["rows"]["train"] for m in runs),
        "stage2_valid_auc": float(np.mean([m["valid"]["click"]["auc"] for m in runs])),
        "stage2_test_gauc": runs[0]["test"]["click"].get("gauc") if len(runs) == 1 else None,
        "train_wall_s": time.perf_counter() - start,
        "overrides": args.overrides,
        "stage2_config": str(configs[0]) if len(configs) == 1 else [str(c) for c in configs],
    }
    if ablation == "unfitted":  # the stage 1 of its training rows
        record["unfitted_stage1"] = [str(r) for r in args.unfitted]
        record["holdout_last"] = ctx["unfitted"]["holdout"]
    if ablation == "rank-weighted":
        record["hard_alpha"] = args.hard_alpha
    if init is not None:
        record["init_from"] = str(init)
        record["init_valid_auc"] = [m.get("untrained_valid_score") for m in runs]
    rank_lists(args, ctx, run_dir, files, n, record)
    if timed(args, ablation):
        record["timing"] = timing(args, run_dir, files["test"])
    return record


def refit_candidates(args: argparse.Namespace, cfg: Any, serving: Any, n_max: int) -> rc.Candidates:
    """--refit: the top `n_max` of every test query from the refit runs (weighted as --stage1),
    each checked to be the refit of the --stage1 run at its position, on the same events."""
    for run, refit in zip(args.stage1, args.refit, strict=True):
        check_refit(run, refit)
    refit_cfg, model, theirs = load_stage1(args.refit, args.stage1_weights)
    check_same_data(serving, theirs, args.stage1[0], args.refit[0])
    data = run_views(refit_cfg, theirs)
    return rc.heldout_candidates(
        model, data, "test", n_max, exclude=cfg.eval.exclude, batch_users=cfg.train.eval_batch_size
    )


def refit_one(
    args: argparse.Namespace, ctx: dict[str, Any], n: int, ablation: str, seed: int, files: dict[str, Path]
) -> dict[str, Any]:
    """--refit: the finished stage 2 of (N, `ablation`, `seed`) in --out ranking the refit stage
    1's test candidates; validation lists and the fusion weight as in its own record."""
    run_dir = args.out / f"N{n}" / f"{ablation}-{seed}"
    if not all((d / "metrics.json").is_file() for d in fold_dirs(run_dir, ablation)):
        raise SystemExit(f"--refit: {run_dir} has not finished training; run the command without --refit first")
    record: dict[str, Any] = {
        "n": n,
        "ablation": ablation,
        "stage2_run": str(run_dir),
        "refit": [*map(str, args.refit)],
    }
    rank_lists(args, ctx, run_dir, files, n, record, ranks_file=ranks_name(args))
    return record


def ranks_name(args: argparse.Namespace, n: int | None = None) -> str:
    """The file of a stage 2's target ranks: the refit's (--refit), the top `n` (--apply-n) or its own lists."""
    if args.refit:
        return "final_ranks-refit.npz"
    return "final_ranks.npz" if n is None else f"final_ranks-N{n}.npz"


def timed(args: argparse.Namespace, ablation: str) -> bool:
    """Whether to time the variant's stage 2 (--timing; not a cross-fitted one: two rankers per request)."""
    return bool(args.timing) and ablation not in CROSS_FITTED


def apply_one(
    args: argparse.Namespace, ctx: dict[str, Any], n: int, m: int, ablation: str, seed: int
) -> dict[str, Any]:
    """The finished stage 2 of (N = `n`, `ablation`, `seed`) ranking the top `m` candidates."""
    run_dir = args.out / f"N{n}" / f"{ablation}-{seed}"
    if not (run_dir / "metrics.json").is_file():
        raise SystemExit(f"--apply-n: {run_dir} has not finished training")
    files = build_data(args, ctx, m, 0, 0, train=False)
    record: dict[str, Any] = {"n": m, "trained_at_n": n, "ablation": ablation, "stage2_run": str(run_dir)}
    rank_lists(args, ctx, run_dir, files, m, record, ranks_file=ranks_name(args, m))
    if timed(args, ablation):
        record["timing"] = timing(args, run_dir, files["test"])
    return record


def rank_lists(
    args: argparse.Namespace,
    ctx: dict[str, Any],
    run_dir: Path,
    files: dict[str, Path],
    n: int,
    record: dict[str, Any],
    ranks_file: str = "final_ranks.npz",
) -> None:
    """Score every validation and test candidate of the top `n` with the stage 2 in `run_dir`;
    the list metrics into `record`, the targets' ranks into ``run_dir / ranks_file``."""
    ranks: dict[str, np.ndarray] = {}
    lists: dict[str, np.ndarray] = {}
    for split in ("valid", "test"):
        table = pq.read_table(files[split])
        c = ctx["cands"][split].top(n)
        scores = variant_scores(run_dir, str(record.get("ablation", "")), table, split)
        lists[split] = ev.as_lists(
            table.column("query").to_numpy(), table.column("slot").to_numpy(), scores, c.items.shape
        )
        list_record(record, ranks, split, lists[split], c, ctx["counts"])
    record["test_bootstrap"] = ev.compare(ranks["test_two"], ranks["test_one"], n=n, resamples=args.resamples)
    blend_record(args, ctx, record, ranks, lists, n, SIGNED_BLEND_WEIGHTS)
    if record.get("ablation") == "rank-weighted":
        blend_record(
            args, ctx, record, ranks, lists, n, LOGQ_WEIGHTS, key="logq", feature=-np.log(np.arange(1.0, n + 1))
        )
    np.savez(run_dir / ranks_file, **ranks)


def blend_record(
    args: argparse.Namespace,
    ctx: dict[str, Any],
    record: dict[str, Any],
    ranks: dict[str, np.ndarray],
    probs: dict[str, np.ndarray],
    n: int,
    weights: tuple[float, ...],
    key: str = "blend",
    feature: np.ndarray | None = None,
) -> None:
    """``record[key]``: the lists fused with the stage-1 score, ``logit(p) + w · s1``, w picked
    among `weights` on validation NDCG@10; the targets' ranks as ``ranks["<split>_<key>"]``.
    `feature` (N,) fused instead of s1: ``logq``'s −log r, r the candidate's stage-1 rank."""
    weight = ev.pick_blend(probs["valid"], ctx["cands"]["valid"].top(n), weights, feature)
    record[key] = {"weight": weight, "weights": list(weights)}
    for split in ("valid", "test"):
        c = ctx["cands"][split].top(n)
        ranks[f"{split}_{key}"] = ev.final_ranks(ev.blend(probs[split], c, weight, feature), c)[0]
        record[key][split] = ev.list_metrics(ranks[f"{split}_{key}"], n)
    record[key]["test_bootstrap"] = ev.compare(ranks[f"test_{key}"], ranks["test_one"], n=n, resamples=args.resamples)


def list_record(
    record: dict[str, Any],
    ranks: dict[str, np.ndarray],
    split: str,
    lists: np.ndarray,
    c: rc.Candidates,
    counts: np.ndarray,
) -> None:
    """Into `record` and `ranks`: the split's two-stage and stage-1 list metrics, the popularity
    of what each list shows first, and how many targets the re-ranking moved up / down."""
    two, one = ev.final_ranks(lists, c)
    ranks[f"{split}_two"], ranks[f"{split}_one"] = two, one
    record[split] = ev.list_metrics(two, c.n)
    record[f"{split}_stage1"] = ev.list_metrics(one, c.n)
    record[f"{split}_top10_train_count"] = {
        "two_stages": ev.top_popularity(lists, c.items, counts),
        "stage1": ev.top_popularity(c.scores, c.items, counts),
    }
    record[f"{split}_moved"] = {"up": int((two < one).sum()), "down": int((two > one).sum())}


def timing(args: argparse.Namespace, run_dir: Path, test_file: Path) -> dict[str, Any]:
    """Stage-2 milliseconds per request of N candidates for the first --timing-users test users."""
    test = pq.read_table(test_file)
    users = list(range(min(args.timing_users, int(test.column("query").to_numpy().max()) + 1)))
    return {str(t): ev.request_ms(run_dir, test, users, threads=t) | {"requests": len(users)} for t in (1, 2)}


def versus_none(args: argparse.Namespace, n: int, ablation: str, seed: int, record: dict[str, Any]) -> bool:
    """``record["vs_none_bootstrap"]``: the variant's test list against the ``none`` ranker's of
    the same N and seed (paired over users: what the ablated part adds), when both have run
    and the record lacks it; whether it was added."""
    if ablation == "none" or "vs_none_bootstrap" in record:
        return False
    mine, base = (args.out / f"N{n}" / f"{a}-{seed}" / ranks_name(args) for a in (ablation, "none"))
    if not (mine.is_file() and base.is_file()):
        return False
    ours, theirs = np.load(mine)["test_two"], np.load(base)["test_two"]
    record["vs_none_bootstrap"] = ev.compare(ours, theirs, n=n, resamples=args.resamples)
    return True


def seed_average(
    args: argparse.Namespace, n: int, ablation: str, seeds: list[int], trained_at: int | None = None
) -> dict[str, Any] | None:
    """Bootstrap of the per-user metrics averaged over the seeds' final lists, against stage 1
    (`trained_at`: the lists of N = `n` ranked by the stage 2 trained at that N, ``--apply-n``),
    and for an ablation whose ``none`` lists exist at the same seeds, against theirs
    (``vs_none_test_bootstrap``: seed-averaged per-user metrics, paired over users; and
    ``blend_vs_none_test_bootstrap``, the ablation's lists fused with the stage-1 score against
    the same ``none`` lists)."""
    name = ranks_name(args, None if trained_at is None else n)
    files = [args.out / f"N{trained_at or n}" / f"{ablation}-{s}" / name for s in seeds]
    if len(files) < 2 or not all(f.is_file() for f in files):
        return None
    loaded = [np.load(f) for f in files]
    one = ev.per_user(loaded[0]["test_one"])
    names = [m for m in ev.METRICS if "@" not in m or int(m.split("@")[1]) <= n]

    def seed_mean(lists: list[Any], ranks: str) -> dict[str, np.ndarray]:
        return {m: np.mean([ev.per_user(x[ranks])[m] for x in lists], axis=0) for m in names}

    def pooled(ranks: str, against: dict[str, np.ndarray] = one) -> dict[str, Any]:
        mean = seed_mean(loaded, ranks)
        return {m: ev.paired_bootstrap(mean[m], against[m], resamples=args.resamples, seed=0) for m in names}

    out = {"n": n, "ablation": ablation, "seeds": seeds, "test_bootstrap": pooled("test_two")}
    for key in ("blend", "logq"):  # the lists fused with the stage-1 score (or log rank), too
        if all(f"test_{key}" in x for x in loaded):
            out[f"{key}_test_bootstrap"] = pooled(f"test_{key}")
    base = [args.out / f"N{trained_at or n}" / f"none-{s}" / name for s in seeds]
    if ablation != "none" and all(f.is_file() for f in base):  # what the ablated part adds, over the seeds
        none = seed_mean([np.load(f) for f in base], "test_two")
        out["vs_none_test_bootstrap"] = pooled("test_two", none)
        if "blend_test_bootstrap" in out:  # e.g. the generative ranker fused with the stage-1 score
            out["blend_vs_none_test_bootstrap"] = pooled("test_blend", none)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out = args.out or Path("runs") / "two-stage" / args.dataset
    path, protocol = results_path(args.dataset, args.results_suffix), PROTOCOL[args.dataset]
    cfg, model, serving = load_stage1(args.stage1, args.stage1_weights)
    for run in args.stage1[1:]:  # an ensemble: every member's protocol and split
        check_stage1(finished_config(run, load_retrieval_config, "retrieval"))
    check_stage1(cfg)
    data = run_views(cfg, serving)
    side = side_info(args.dataset)
    content = content_vectors(side, args.content_dim)  # before the candidates: a missing extra fails first
    n_max = max(args.n + args.apply_n)
    print(f"stage 1: {stage1_name(args)} ({cfg.model.kind}), {len(data.test_target):,} users, {data.num_items:,} items")
    cands = {
        s: rc.heldout_candidates(model, data, s, n_max, exclude=cfg.eval.exclude, batch_users=cfg.train.eval_batch_size)
        for s in ("valid", "test")
    }
    prefix = None  # --refit: the training rows are on disk already
    if args.refit:
        cands["test"] = refit_candidates(args, cfg, serving, n_max)
    else:
        user, pos = rc.prefix_queries(
            data.train.lengths(), per_user=args.per_user or None, min_prefix=args.min_prefix, seed=DATA_SEED
        )
        prefix = cached_prefix_candidates(args.out, args.stage1, args.stage1_weights, model, data, user, pos, n_max)
    ctx = {
        "model": model,
        "data": data,
        "serving": serving,
        "side": side,
        "cands": cands,
        "prefix": prefix,
        "content": content,
        "counts": np.bincount(data.train.items, minlength=data.num_items + 1),
    }
    if "unfitted" in args.ablation:
        ctx["unfitted"] = unfitted_stage1(args, data, serving, n_max)
    common = {"protocol": protocol, "config": stage1_name(args)}
    refit = {"refit": [str(r) for r in args.refit]} if args.refit else {}
    for n in sorted(set(args.n + args.apply_n)):
        rec = stage1_record(cands, prefix, n) | {"stage1_run": stage1_name(args), **refit}
        rec["prefix_queries"] = None if prefix is None else len(prefix)
        save_result(path, f"stage1|N{n}", rec, name=f"stage1|N{n}", seed=None, **common)
        print(f"N={n}: stage-1 recall@N test {rec['test']['recall']:.4f}, train prefixes {rec['train_prefix_recall']}")
    for n in args.n:
        for ablation in args.ablation:
            if ablation == "generative":
                files = build_generative_data(args, ctx, n)
            elif ablation == "no-hard":  # as many negatives, all uniform
                files = build_data(args, ctx, n, 0, args.hard + args.sampled)
            elif ablation == "unfitted":
                files = build_data(args, ctx, n, args.hard, args.sampled, unfitted=True)
            elif ablation == "rank-weighted":
                files = build_data(args, ctx, n, args.hard, args.sampled, hard_alpha=args.hard_alpha)
            else:
                files = build_data(args, ctx, n, args.hard, args.sampled)
            for seed in args.seeds:
                key = f"{ablation}|N{n}|{seed}"
                done = load_results(path).get(key)
                if done is not None:  # finished; --timing adds the timing it lacks
                    run_dir = args.out / f"N{n}" / f"{ablation}-{seed}"
                    rescore = "blend" not in done or (ablation == "rank-weighted" and "logq" not in done)
                    if ablation != "generative" and rescore:  # finished before the blend (or logq) row
                        rank_lists(args, ctx, run_dir, files, n, done)
                        save_result(path, key, done, name=f"{ablation}|N{n}", seed=seed, **common)
                    if timed(args, ablation) and "timing" not in done:
                        done["timing"] = (
                            generative_timing(args, ctx, n, run_dir)
                            if ablation == "generative"
                            else timing(args, run_dir, files["test"])
                        )
                        save_result(path, key, done, name=f"{ablation}|N{n}", seed=seed, **common)
                    if versus_none(args, n, ablation, seed, done):
                        save_result(path, key, done, name=f"{ablation}|N{n}", seed=seed, **common)
                    continue
                if args.refit:
                    record = refit_one(args, ctx, n, ablation, seed, files)
                    save_result(path, key, record, name=f"{ablation}|N{n}", seed=seed, **common)
                    print(f"{key}: refit test HR@10 {record['test']['HR@10']:.4f}", flush=True)
                    continue
                print(f"{key}: training stage 2", flush=True)
                if ablation == "generative":
                    record = run_generative(args, ctx, n, seed, files)
                else:
                    record = run_one(args, ctx, n, ablation, seed, files)
                versus_none(args, n, ablation, seed, record)
                save_result(path, key, record, name=f"{ablation}|N{n}", seed=seed, **common)
                b, t = record["test_bootstrap"], record["test"]
                print(
                    f"{key}: test HR@10 {t['HR@10']:.4f} (stage 1 {record['test_stage1']['HR@10']:.4f}, "
                    f"diff {b['HR@10']['diff']:+.4f} [{b['HR@10']['low']:+.4f}, {b['HR@10']['high']:+.4f}]), "
                    f"NDCG@10 {t['NDCG@10']:.4f} (stage 1 {record['test_stage1']['NDCG@10']:.4f})",
                    flush=True,
                )
            pooled = seed_average(args, n, ablation, args.seeds)
            if pooled is not None:
                save_result(path, f"{ablation}|N{n}|seeds", pooled, name=f"{ablation}|N{n}", seed=None, **common)
            if ablation != "generative":
                for m in args.apply_n:
                    apply_n(args, ctx, path, common, n, m, ablation)
    print(table(load_results(path)))


def apply_n(
    args: argparse.Namespace, ctx: dict[str, Any], path: Path, common: dict[str, Any], n: int, m: int, ablation: str
) -> None:
    """--apply-n: the records ``<ablation>@N<n>|N<m>|<seed>`` (and ``|seeds``) of the seeds' stage 2."""
    variant = f"{ablation}@N{n}"
    for seed in args.seeds:
        key = f"{variant}|N{m}|{seed}"
        done = load_results(path).get(key)
        if done is not None and (not timed(args, ablation) or "timing" in done):
            continue
        if done is not None:
            done["timing"] = timing(args, Path(done["stage2_run"]), build_data(args, ctx, m, 0, 0, train=False)["test"])
            record = done
        else:
            record = apply_one(args, ctx, n, m, ablation, seed)
        save_result(path, key, record, name=f"{variant}|N{m}", seed=seed, **common)
        t = record["test"]
        print(f"{key}: test HR@10 {t['HR@10']:.4f} (stage 1 {record['test_stage1']['HR@10']:.4f})", flush=True)
    pooled = seed_average(args, m, ablation, args.seeds, trained_at=n)
    if pooled is not None:
        save_result(path, f"{variant}|N{m}|seeds", pooled, name=f"{variant}|N{m}", seed=None, **common)


# --------------------------------------------------------------------------- the table


def _cell(runs: list[dict[str, Any]], split: str, metric: str) -> str:
    vals = [r[split][metric] for r in runs if metric in r[split]]
    if not vals:
        return "–"
    return f"{np.mean(vals):.4f}" if len(vals) == 1 else f"{np.mean(vals):.4f} ± {np.std(vals):.4f}"


def _diff(b: dict[str, float] | None) -> str:
    if b is None:
        return "–"
    mark = " *" if b["low"] > 0 or b["high"] < 0 else ""
    return f"{b['diff']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]{mark}"


def _timing(runs: list[dict[str, Any]]) -> str:
    t = next((r["timing"] for r in runs if "timing" in r), None)
    return "–" if t is None else f"{t['1']['mean_ms']:.1f} / {t['2']['mean_ms']:.1f}"


def table(results: dict[str, Any]) -> str:
    """Markdown: per N, stage 1 alone and each stage-2 variant on test (mean ± std over seeds),
    the difference to stage 1 with its 95 % paired-bootstrap interval (* = excludes 0)."""
    head = [
        "N",
        "list",
        "seeds",
        "recall@N",
        "HR@10",
        "NDCG@10",
        "HR@50",
        "MRR",
        "Δ HR@10 [95 % CI]",
        "Δ NDCG@10 [95 % CI]",
        "stage-2 ms/request (1 / 2 threads)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ns = sorted({int(k.split("|")[1][1:]) for k in results if k.startswith("stage1|")})
    for n in ns:
        s1 = results[f"stage1|N{n}"]
        recall = f"{s1['test']['recall']:.4f}"
        cells = [str(n), "stage 1 alone", "–", recall]
        cells += [f"{s1['test'][m]:.4f}" if m in s1["test"] else "–" for m in ("HR@10", "NDCG@10", "HR@50", "MRR")]
        lines.append("| " + " | ".join([*cells, "–", "–", "–"]) + " |")
        applied = sorted({k.split("|")[0] for k in results if "@" in k.split("|")[0] and k.split("|")[1] == f"N{n}"})
        for variant in [*VARIANTS, *applied]:
            runs = [v for k, v in results.items() if k.startswith(f"{variant}|N{n}|") and not k.endswith("|seeds")]
            if not runs:
                continue
            pooled = results.get(f"{variant}|N{n}|seeds")
            boot = pooled["test_bootstrap"] if pooled else (runs[0]["test_bootstrap"] if len(runs) == 1 else None)
            ablation, _, trained_at = variant.partition("@N")
            label = "two stages" if ablation == "none" else f"two stages, {ablation}"
            label += f" (stage 2 trained at N = {trained_at})" if trained_at else ""
            cells = [str(n), label, str(len(runs)), recall]
            cells += [_cell(runs, "test", m) for m in ("HR@10", "NDCG@10", "HR@50", "MRR")]
            cells += [_diff(boot and boot.get("HR@10")), _diff(boot and boot.get("NDCG@10")), _timing(runs)]
            lines.append("| " + " | ".join(cells) + " |")
            for key, what in (("blend", "+ stage-1 score (weight"), ("logq", "− a · log stage-1 rank (a =")):
                blends = [r[key] for r in runs if key in r]
                if not blends:  # else the same runs fused (one weight, picked on validation)
                    continue
                weights = ", ".join(f"{b['weight']:g}" for b in blends)
                cells = [str(n), f"{label} {what} {weights}, on valid)", str(len(blends)), recall]
                cells += [_cell(blends, "test", m) for m in ("HR@10", "NDCG@10", "HR@50", "MRR")]
                b = blends[0]["test_bootstrap"] if len(blends) == 1 else (pooled or {}).get(f"{key}_test_bootstrap")
                cells += [_diff(b and b.get("HR@10")), _diff(b and b.get("NDCG@10")), "–"]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
