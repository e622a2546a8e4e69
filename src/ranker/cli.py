"""The ``ranker`` command line: demo, train, distill, evaluate, report, datasets (list, prepare, synth), candidates.

Exit status: 0 done; 2 a user error (bad config key, missing column, unknown dataset), one clear
``error:`` line without a traceback, before any work where it can be known before; 3 trained,
and the run directory is complete, but the result is not usable (no validation score was a
number, so no epoch could be selected; with ``train --strict`` also: no trained epoch beat the
untrained weights): one ``error:`` line says what happened and what to check, and
``metrics.json`` records it (``usable``, ``unusable``, ``beats_untrained``; see
:mod:`ranker.outcome`); 130 interrupted (rerun to resume). Anything else is a bug: one line naming
the command and the exception, exit status 1, and ``ranker --debug …`` shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ranker.errors import ConfigError, RankerError, warn

if TYPE_CHECKING:
    pass

DEMOS = {"synthetic": "demo-synthetic.yaml", "ml-100k": "demo-ml100k.yaml", "rk-ml100k": "demo-ml100k.yaml"}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 1
    try:
        _check_launcher(args.command)
        return int(args.func(args) or 0)
    except RankerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not the user's: one line unless --debug asks for more
        if args.debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"error: ranker {args.command}: unexpected {type(exc).__name__}: {first} "
            "(rerun with `ranker --debug ...` for the traceback)",
            file=sys.stderr,
        )
        return 1


def _check_launcher(command: str) -> None:
    """Under torchrun (several processes) only `ranker train` runs: the others would each write the
    same files. Read from torchrun's environment without importing torch."""
    size = os.environ.get("WORLD_SIZE", "").strip()
    if command != "train" and size not in ("", "0", "1"):
        raise ConfigError(
            f"ranker {command}: started as one of {size} processes (torchrun); only `ranker train` "
            "runs data-parallel, run this command as one process"
        )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ranker", description="Train, evaluate and serve neural recommenders.")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = p.add_subparsers(title="commands", dest="command")

    d = sub.add_parser("demo", help="train and evaluate a ranker end to end on a built-in dataset")
    d.add_argument(
        "--dataset",
        default="synthetic",
        choices=sorted(DEMOS),
        help="synthetic (embedded, no download) or ml-100k (RK-ML100K protocol)",
    )
    d.add_argument("--out", type=Path, help="run directory (default runs/demo-<dataset>-<time>)")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    d.set_defaults(func=_cmd_demo)

    t = sub.add_parser("train", help="train the model a YAML config describes")
    t.add_argument("config", type=Path)
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set model.backbone.hidden=[256,128]",
    )
    t.add_argument("--out", type=Path, help="run directory; an existing one is resumed")
    t.add_argument(
        "--init-from",
        type=Path,
        metavar="RUN_DIR",
        help="fine-tune: start from a finished run's weights and preprocessing",
    )
    t.add_argument(
        "--strict",
        action="store_true",
        help="also exit 3 when no trained epoch beats the untrained weights on validation (default: a warning)",
    )
    t.set_defaults(func=_cmd_train)

    rf = sub.add_parser(
        "refit",
        help="retrain a finished retrieval run with its validation items as training targets, for its best epoch count",
    )
    rf.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished select_on_valid retrieval run")
    rf.add_argument("--out", type=Path, help="run directory (default runs/<name>-refit); an existing one is resumed")
    rf.add_argument("--epochs", type=int, help="epochs to train (default: the run's best validation epoch)")
    rf.set_defaults(func=_cmd_refit)

    di = sub.add_parser("distill", help="train a student config on a finished run's soft labels")
    di.add_argument("--teacher", type=Path, required=True, metavar="RUN_DIR", help="finished teacher run")
    di.add_argument(
        "--student",
        type=Path,
        required=True,
        metavar="CONFIG.yaml",
        help="the student's config (same data; alpha and temperature in train.distill)",
    )
    di.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    di.add_argument("--out", type=Path, help="run directory; an existing one is resumed")
    di.set_defaults(func=_cmd_distill)

    e = sub.add_parser("evaluate", help="evaluate a trained run directory on a split")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--split", default="test", choices=["train", "valid", "test"])
    e.set_defaults(func=_cmd_evaluate)

    r = sub.add_parser("report", help="(re)write report.html of a run directory")
    r.add_argument("run_dir", type=Path)
    r.set_defaults(func=_cmd_report)

    co = sub.add_parser("collisions", help="hash collision shares of a run's categorical encoder")
    co.add_argument("run_dir", type=Path)
    co.set_defaults(func=_cmd_collisions)

    rt = sub.add_parser("retrieve", help="top-k candidates of a trained retrieval run for one user")
    rt.add_argument("run_dir", type=Path)
    who = rt.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a user id of the run's data (raw id, as in the event file)")
    who.add_argument(
        "--history",
        metavar="ITEM,ITEM,...",
        help="raw item ids, oldest first, of a user the model has never seen "
        "(an id outside the run's catalogue is an error naming it)",
    )
    rt.add_argument("--times", metavar="T,T,...", help="unix seconds of the --history items")
    rt.add_argument("--k", type=_positive_int, default=20, help="candidates to return (≥ 1)")
    rt.add_argument("--ann", choices=["hnsw", "ivf"], help="search a faiss index (ranker[ann])")
    rt.set_defaults(func=_cmd_retrieve)

    ca = sub.add_parser(
        "candidates", help="stage-1 top-N of a retrieval run for the held-out queries or training prefixes"
    )
    ca.add_argument(
        "run_dir", type=Path, nargs="+", help="a retrieval run, or several trained on the same events (an ensemble)"
    )
    ca.add_argument(
        "--weights", type=float, nargs="+", help="one weight > 0 per run: score = Σ w_k · score_k (default 1 each)"
    )
    ca.add_argument("--n", type=_positive_int, default=200, help="candidates per query (≥ 1)")
    ca.add_argument("--split", required=True, choices=["valid", "test", "train-prefixes"])
    ca.add_argument("--out", type=Path, required=True, help="parquet file: one row per (query, candidate), raw ids")
    ca.add_argument("--per-user", type=_positive_int, help="train-prefixes: at most this many positions per user")
    ca.add_argument("--min-prefix", type=_positive_int, default=1, help="train-prefixes: shortest input")
    ca.add_argument("--seed", type=int, default=0, help="train-prefixes: seed of the --per-user subset")
    ca.set_defaults(func=_cmd_candidates)

    rb = sub.add_parser(
        "retrieval-baseline", help="most-popular baseline on a retrieval protocol (full ranking, leave-one-out)"
    )
    rb.add_argument("name", help="retrieval dataset, e.g. r-ml100k, r-ml1m, r-beauty")
    rb.add_argument("--split", default="test", choices=["valid", "test"])
    rb.set_defaults(func=_cmd_retrieval_baseline)

    _serving_parsers(sub)

    ds = sub.add_parser("datasets", help="list or prepare the built-in datasets")
    dsub = ds.add_subparsers(title="datasets commands")
    dl = dsub.add_parser("list", help="list built-in datasets and their protocols")
    dl.set_defaults(func=_cmd_datasets_list)
    dp = dsub.add_parser("prepare", help="materialise a protocol's splits into the cache")
    dp.add_argument("name")
    dp.add_argument("--force", action="store_true", help="rebuild even if cached")
    dp.set_defaults(func=_cmd_datasets_prepare)
    dsy = dsub.add_parser(
        "synth", help="write a synthetic Criteo-like click log of any size as parquet chunks + a ready config"
    )
    dsy.add_argument("--rows", required=True, help="train rows: 1000, 1k, 10M, 50M, 2e6")
    dsy.add_argument("--cardinality", required=True, help="ids of the largest categorical column (e.g. 10M)")
    dsy.add_argument("--out", required=True, type=Path, help="output directory")
    dsy.add_argument("--files", default="1", help="number of train parquet files (default 1)")
    dsy.add_argument("--seed", default="0", help="generator seed (default 0)")
    dsy.add_argument("--chunk-rows", default="1M", help="rows generated and written at once (default 1M)")
    dsy.add_argument("--categorical", default="26", help="categorical columns (default 26)")
    dsy.add_argument("--eval-rows", default=None, help="rows of valid and of test (default rows/10, ≤ 100k)")
    dsy.set_defaults(func=_cmd_datasets_synth)
    return p


# ---------------------------------------------------------------------- commands


def _cmd_demo(args: argparse.Namespace) -> int:
    from ranker.config import load_config
    from ranker.ranking.run import train_run

    cfg_file = resources.files("ranker") / "configs" / DEMOS[args.dataset]
    with resources.as_file(cfg_file) as path:
        cfg = load_config(path, args.overrides)
    out = args.out or _default_out(f"demo-{args.dataset}")
    print(f"ranker demo: {cfg.data.dataset} → {out}")
    start = time.perf_counter()
    metrics = train_run(cfg, out)
    _print_summary(metrics, out, time.perf_counter() - start)
    return _status(metrics, out)


def _cmd_train(args: argparse.Namespace) -> int:
    from ranker.families import family_of_config, require_family

    family = family_of_config(args.config, args.overrides)
    if args.init_from is not None and not family.fine_tunes:
        raise ConfigError(f"--init-from: fine-tuning is for ranking runs, not {family.kind} runs")
    if args.init_from is not None:
        require_family(args.init_from, family.kind, "--init-from", "fine-tuning a ranker")
    cfg = family.load_config(args.config, args.overrides)
    out = _run_dir(args.out or _default_out(cfg.name))
    options: dict[str, Any] = {}
    if family.kind == "ranking":
        options = {"base_dir": args.config.resolve().parent, "init_from": args.init_from}
    else:
        from ranker.config import anchored

        cfg = anchored(cfg, args.config)
    from ranker.distributed import process_group
    from ranker.train.engine import pick_device

    start = time.perf_counter()
    with process_group(pick_device(cfg.train.device)) as world:  # torchrun: gloo on CPU, nccl on CUDA
        metrics = family.train(cfg, out, **options)
    if not world.writer:  # rank 0 prints the summary and the status
        return 0
    SUMMARIES[family.kind](cfg, metrics, out, time.perf_counter() - start)
    return _status(metrics, out, strict=args.strict)


def _cmd_refit(args: argparse.Namespace) -> int:
    from ranker.families import require_family
    from ranker.retrieval.run import refit_config, train_retrieval_run

    require_family(args.run_dir, "retrieval", "RUN_DIR", "`ranker refit`")
    cfg = refit_config(args.run_dir, args.epochs)
    out = _run_dir(args.out or _default_out(cfg.name))
    start = time.perf_counter()
    metrics = train_retrieval_run(cfg, out)
    SUMMARIES["retrieval"](cfg, metrics, out, time.perf_counter() - start)
    return _status(metrics, out, strict=False)


def _cmd_distill(args: argparse.Namespace) -> int:
    from ranker.config import load_config
    from ranker.families import family_of_config, require_family
    from ranker.ranking.run import train_run

    require_family(args.teacher, "ranking", "--teacher", "`ranker distill`")
    student = family_of_config(args.student, args.overrides)
    if student.kind != "ranking":
        raise ConfigError(
            f"--student {args.student}: a {student.kind} config; `ranker distill` trains ranking students"
        )
    cfg = load_config(args.student, args.overrides)
    out = _run_dir(args.out or _default_out(f"{cfg.name}-distilled"))
    start = time.perf_counter()
    metrics = train_run(cfg, out, base_dir=args.student.resolve().parent, teacher=args.teacher)
    _print_summary(metrics, out, time.perf_counter() - start)
    d = metrics["distill"]
    print(
        f"distilled from {d['teacher']} (alpha {d['alpha']}, temperature {d['temperature']}; "
        f"teacher outputs on train computed once in {d['teacher_predict_s']:.1f}s and cached)"
    )
    return _status(metrics, out)


def _status(metrics: dict[str, Any], out: Path, *, strict: bool = False) -> int:
    """0 for a usable run; else one ``error:`` line (what happened, what to check) and exit 3.
    `strict`: a run whose trained epochs never beat the untrained weights is not usable either."""
    from ranker.outcome import UNUSABLE_EXIT

    why = metrics.get("unusable")
    if why is None and strict and metrics.get("beats_untrained") is False:
        why = next(iter(metrics.get("warnings", [])), "no trained epoch beat the untrained weights")
    if metrics.get("usable", True) and why is None:
        return 0
    print(f"error: {out}: trained, but the result is not usable (exit {UNUSABLE_EXIT}): {why}", file=sys.stderr)
    return UNUSABLE_EXIT


def _run_dir(out: Path) -> Path:
    """`out` as a run directory to create or resume: an existing file there is an error."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a run directory")
    return out


def _retrieval_summary(cfg: Any, m: dict[str, Any], out: Path, seconds: float) -> None:
    print(
        f"\n{cfg.model.kind} on {cfg.data.dataset or cfg.data.path}: best epoch {_best(m)}, "
        f"{m['params']:,} parameters, {m['seconds_per_epoch']:.1f} s/epoch; full ranking, "
        f"{m['users']:,} users x {m['items']:,} items"
    )
    for name, row in (("test", m["test"]), ("most-popular", m["most_popular"]["test"])):
        print(f"{name:<14}" + "  ".join(f"{k} {_fmt(v)}" for k, v in row.items()))
    print(f"\nrun directory: {out}  (report: {out / 'report.html'})  total {seconds:.0f}s")


def _generative_summary(cfg: Any, m: dict[str, Any], out: Path, seconds: float) -> None:
    print(
        f"\ngenerative HSTU on {cfg.data.dataset or cfg.data.path}: best epoch {_best(m)}, "
        f"{m['params']:,} parameters, {m['train_events_per_s']:,.0f} train events/s"
    )
    base = m.get("baseline", {}).get("test", {})
    for task, row in m["test"].items():
        if "rmse" in row:
            b = base.get(task, {})
            print(
                f"test {task:<8} rmse {_fmt(row['rmse'])}  mae {_fmt(row['mae'])}  (constant train mean "
                f"{_fmt(b.get('mean'))}: rmse {_fmt(b.get('rmse'))}  mae {_fmt(b.get('mae'))})"
            )
            continue
        print(f"test {task:<8} auc {_fmt(row['auc'])}  gauc {_fmt(row['gauc'])}  logloss {_fmt(row['logloss'])}")
    print(f"\nrun directory: {out}  (report: {out / 'report.html'})  total {seconds:.0f}s")


def _cmd_retrieve(args: argparse.Namespace) -> int:
    from ranker.families import require_family
    from ranker.retrieval.run import load_run
    from ranker.retrieval.serve import check_times, parse_ids, parse_raw_ids, recommend

    require_family(args.run_dir, "retrieval", "", "`ranker retrieve`")
    if args.user is not None and args.times is not None:
        raise ConfigError("--times: only with --history (a known --user's times come from the run)")
    cfg, model, serving = load_run(args.run_dir)
    if args.user is not None:
        items, times = serving.history(args.user)
        who = f"user {args.user} ({len(items)} items)"
    else:
        items = serving.internal(parse_raw_ids(args.history, "--history"), "--history")
        times = check_times(parse_ids(args.times, "--times"), len(items)) if args.times is not None else None
        who = f"new user ({len(items)} items)"
    index = None
    if args.ann:
        from ranker.retrieval.ann import build_index

        index = build_index(model.item_vectors()[1:].detach().numpy(), args.ann)
    top = recommend(model, items, times, args.k, ann_index=index)
    if len(top) < args.k:
        warn(f"--k {args.k}: only {len(top)} catalogue items are not in the history; all of them are listed")
    raw = serving.raw([item for item, _ in top])
    print(f"{cfg.model.kind} top-{args.k} for {who}, {'faiss ' + args.ann if args.ann else 'exact'}:")
    for rank, ((_, score), item) in enumerate(zip(top, raw, strict=True), 1):
        print(f"{rank:>4}  item {item!s:<8} score {score:.4f}")
    return 0


def _cmd_candidates(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from ranker.families import family_of_run
    from ranker.retrieval import candidates as rc
    from ranker.retrieval.ensemble import load_stage1
    from ranker.retrieval.run import run_views

    for run in args.run_dir:
        if family_of_run(run).kind != "retrieval":
            raise ConfigError(f"{run}: `ranker candidates` needs a retrieval run")
    cfg, model, serving = load_stage1(args.run_dir, args.weights)
    data = run_views(cfg, serving)
    if args.n > data.num_items:
        raise ConfigError(f"--n {args.n}: the catalogue has {data.num_items} items")
    if args.split == "train-prefixes":
        user, pos = rc.prefix_queries(
            data.train.lengths(), per_user=args.per_user, min_prefix=args.min_prefix, seed=args.seed
        )
        cands = rc.prefix_candidates(model, data.train, user, pos, args.n, max_len=data.max_len, progress=True)
    else:
        cands = rc.heldout_candidates(
            model, data, args.split, args.n, exclude=cfg.eval.exclude, batch_users=cfg.train.eval_batch_size
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rc.candidates_table(cands, serving, args.split), args.out)
    print(
        f"{args.split}: {len(cands):,} queries x {args.n} candidates, recall@{args.n} {cands.recall():.4f} "
        f"(share of targets among them) -> {args.out}"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ranker.families import family_of_run

    result = family_of_run(args.run_dir).evaluate(args.run_dir, args.split)
    print(json.dumps(result, indent=2, default=float))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ranker.report import write_report
    from ranker.run_manifest import verify_run

    verify_run(args.run_dir, finished=False)  # a sealed run must be intact; one in progress has a log to plot
    print(write_report(args.run_dir))
    return 0


def _cmd_datasets_list(args: argparse.Namespace) -> int:
    from ranker.data.recipes import all_recipes

    rows = [("name", "protocol", "kind", "aliases", "summary")]  # the header, then one row per recipe
    rows += [(r.name, r.protocol, r.kind, ", ".join(r.aliases), r.summary) for r in all_recipes().values()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return 0


def _cmd_datasets_prepare(args: argparse.Namespace) -> int:
    from ranker.data.recipes import get_recipe, prepare

    start = time.perf_counter()
    ds = prepare(get_recipe(args.name, "ranker datasets prepare"), force=args.force)
    print(f"{ds.name}: {ds.directory} ({time.perf_counter() - start:.1f}s)")
    print(json.dumps({"rows": ds.manifest.get("rows"), "meta": ds.manifest.get("meta")}, indent=2, default=str)[:4000])
    return 0


def _cmd_datasets_synth(args: argparse.Namespace) -> int:
    from ranker.data.synth import SynthSpec, parse_count, write_synth

    start = time.perf_counter()
    seed = args.seed.strip()
    if not seed.isdigit():
        raise ConfigError(f"--seed: expected a non-negative integer, got {args.seed!r}")
    spec = SynthSpec(
        rows=parse_count(args.rows, "--rows"),
        cardinality=parse_count(args.cardinality, "--cardinality"),
        seed=int(seed),
        files=parse_count(args.files, "--files"),
        categorical=parse_count(args.categorical, "--categorical"),
        eval_rows=None if args.eval_rows is None else parse_count(args.eval_rows, "--eval-rows"),
    )
    meta = write_synth(spec, args.out, chunk_rows=parse_count(args.chunk_rows, "--chunk-rows"))
    print(
        f"{args.out}: {meta['rows']['train']:,} train rows in {spec.files} file(s), click rate "
        f"{meta['click_rate']['train']:.3f} ({time.perf_counter() - start:.1f}s)"
    )
    print(f"train it: ranker train {args.out / 'synth.yaml'} --out RUN_DIR")
    return 0


def _cmd_collisions(args: argparse.Namespace) -> int:
    from ranker.families import require_family
    from ranker.ranking.run import collisions_of_run

    require_family(args.run_dir, "ranking", "", "`ranker collisions`")
    report = collisions_of_run(args.run_dir)
    if report is None:
        print("plain embedding tables: every train value has its own row (no hash collisions)")
        return 0
    print(f"{report['encoder']}: share of distinct train values that collide")
    print(f"{'feature':<24}{'distinct':>10}{'intra':>9}{'inter':>9}")
    for name, s in report["features"].items():
        print(f"{name:<24}{s['distinct']:>10,}{s['intra']:>9.4f}{s['inter']:>9.4f}")
    return 0


def _cmd_retrieval_baseline(args: argparse.Namespace) -> int:
    from ranker.data.recipes import get_recipe
    from ranker.retrieval import evaluate, popularity_scorer
    from ranker.retrieval.data import from_recipe

    recipe = get_recipe(args.name, "ranker retrieval-baseline")
    if recipe.kind != "retrieval":
        raise ConfigError(f"{args.name!r} is a {recipe.kind} dataset, not a retrieval one")
    data = from_recipe(recipe.name).views()
    metrics = evaluate(popularity_scorer(data), data, args.split)
    print(
        f"{recipe.name} ({recipe.protocol}), {args.split}, {len(data.test_target):,} users, "
        f"{data.num_items:,} items, most-popular:"
    )
    print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0


# ---------------------------------------------------------------------- serving (ranker.serving)


def _serving_parsers(sub: Any) -> None:
    """``ranker bundle``, ``serve``, ``recommend``, ``predict``, ``export`` and ``events load``."""
    b = sub.add_parser("bundle", help="pack a retrieval run (+ a ranker run) into one verified serving directory")
    b.add_argument(
        "--retrieval",
        type=Path,
        nargs="+",
        required=True,
        metavar="RUN_DIR",
        help="finished SASRec / HSTU run (stage 1: candidates, item vectors, catalogue); several runs on "
        "the same events are served as one ensemble (--retrieval-weights)",
    )
    b.add_argument(
        "--retrieval-weights",
        type=float,
        nargs="+",
        metavar="W",
        help="with several --retrieval runs: one weight > 0 each, score = Σ w_k · score_k (default 1 each)",
    )
    b.add_argument(
        "--ranker",
        type=Path,
        metavar="RUN_DIR",
        help="finished ranking run on the same item ids (stage 2): a feature ranker or a generative "
        "(HSTU) ranker; omit for retrieval only",
    )
    b.add_argument("--out", type=Path, required=True, help="bundle directory to write (written atomically)")
    b.add_argument(
        "--index",
        choices=["auto", "hnsw", "ivf", "exact"],
        default="auto",
        help="faiss index built once over the item vectors; exact = no index (also "
        "the fallback when faiss is not installed); auto (default) = exact up to "
        "100,000 items, hnsw above",
    )
    b.add_argument(
        "--role",
        action="append",
        default=[],
        metavar="COLUMN=ROLE",
        help="where a ranker input column's value comes from at request time: user, item, context, or "
        "computed per request: retrieval_score, retrieval_rank, history_length (default: inferred from "
        "the data; stage1_score, stage1_rank, hist_len get the computed roles; recorded in features.json)",
    )
    b.add_argument(
        "--min-item-overlap",
        type=_share,
        default=0.9,
        metavar="SHARE",
        help="share of the ranker's item ids that must be in the retrieval catalogue",
    )
    b.add_argument(
        "--quantize",
        choices=["int8"],
        help="serve the ranker with dynamically quantised int8 linear layers (CPU; recorded in the manifest)",
    )
    b.add_argument(
        "--stage1-weight",
        type=float,
        metavar="W",
        help="with --ranker: /recommend orders by logit(ranker score) + W · stage-1 score instead of the "
        "ranker score alone (benchmarks/two_stage.py picks W on validation; default: the ranker alone)",
    )
    b.add_argument("--force", action="store_true", help="replace an existing --out directory")
    b.set_defaults(func=_cmd_bundle)

    sv = sub.add_parser("serve", help="serve a bundle over HTTP (FastAPI + uvicorn; OpenAPI at /docs)")
    sv.add_argument("bundle", type=Path, help="a directory written by `ranker bundle` (checked against its manifest)")
    sv.add_argument(
        "--store",
        default="sqlite:///events.db",
        help="event store: sqlite:///path.db (embedded, default ./events.db) or "
        "redis://host:port/db[?cap=N] (shared by workers and machines)",
    )
    sv.add_argument("--host", default="127.0.0.1", help="interface to bind (default: local only)")
    sv.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000)")
    sv.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="uvicorn worker processes (each loads the bundle; /reload swaps one worker's)",
    )
    sv.add_argument("--threads", type=_positive_int, help="torch threads per worker (default: torch's choice)")
    sv.add_argument(
        "--max-body",
        type=_positive_int,
        default=4 * 1024 * 1024,
        metavar="BYTES",
        help="larger request bodies get a 413",
    )
    sv.add_argument(
        "--watch",
        action="store_true",
        help="poll BUNDLE/manifest.json (mtime + sha256) and swap to a new complete bundle as POST /reload "
        "does; deploy atomically: ranker bundle --out bundles/v2, then repoint a symlink bundles/current",
    )
    sv.add_argument(
        "--watch-interval", type=float, default=5.0, metavar="SECONDS", help="seconds between polls (default 5)"
    )
    sv.set_defaults(func=_cmd_serve)

    rc = sub.add_parser("recommend", help="top-k for every user of a file with a bundle (batch, no HTTP)")
    rc.add_argument("bundle", type=Path, help="a directory written by `ranker bundle`")
    rc.add_argument("users", type=Path, help="text file, one raw user id per line")
    rc.add_argument("--store", default="sqlite:///events.db", help="event store holding the histories")
    rc.add_argument("--k", type=_positive_int, default=100, help="items per user")
    rc.add_argument("--n-candidates", type=_positive_int, default=200, help="stage-1 candidates per user")
    rc.add_argument("--out", type=Path, required=True, help="parquet: user, rank, item, score, fallback, tasks")
    rc.set_defaults(func=_cmd_recommend)

    pr = sub.add_parser("predict", help="score a parquet file of ranker rows (batch, streamed in chunks)")
    pr.add_argument("source", type=Path, help="a ranking run directory or a bundle with a ranker")
    pr.add_argument("rows", type=Path, help="parquet with the ranker's input columns (as in training)")
    pr.add_argument(
        "--out", type=Path, required=True, help="parquet: score and one probability per task, row order kept"
    )
    pr.add_argument("--chunk", type=_positive_int, default=50_000, help="rows per chunk")
    pr.set_defaults(func=_cmd_predict)

    ex = sub.add_parser("export", help="export a ranking run's model (history encoder included) to .pt2 or ONNX")
    ex.add_argument("run_dir", type=Path, help="a finished ranking run directory (feature ranker)")
    ex.add_argument(
        "--format",
        required=True,
        choices=["pt2", "onnx"],
        help="pt2: torch.export ExportedProgram (torch.export.load); onnx: ONNX graph checked with onnxruntime "
        "(extra `export`)",
    )
    ex.add_argument(
        "--out", type=Path, help="file to write (default RUN_DIR/model.<format>); its inputs go to FILE.inputs.json"
    )
    ex.set_defaults(func=_cmd_export)

    ev = sub.add_parser("events", help="the event store of `ranker serve`")
    esub = ev.add_subparsers(title="events commands")
    el = esub.add_parser("load", help="bulk-load a past event file (CSV or parquet) into a store")
    el.add_argument("store", help="sqlite:///path.db or redis://host:port/db")
    el.add_argument("file", type=Path, help=".parquet, or CSV with a header (see --column-names)")
    el.add_argument("--user-column", required=True, help="column of raw user ids")
    el.add_argument("--item-column", required=True, help="column of raw item ids")
    el.add_argument("--action-column", help="stored as the event's action (e.g. a rating)")
    el.add_argument("--time-column", help="unix seconds (default: the row number)")
    el.add_argument("--delimiter", default=",", help="CSV delimiter; '\\t' for tab")
    el.add_argument("--column-names", metavar="A,B,...", help="CSV without a header: its column names")
    el.add_argument("--chunk", type=_positive_int, default=10_000, help="events per write transaction")
    el.set_defaults(func=_cmd_events_load)


def _cmd_bundle(args: argparse.Namespace) -> int:
    from ranker.serving.bundle import ROLES, write_bundle

    roles = {}
    for r in args.role:
        col, sep, role = r.partition("=")
        if not sep or not col:
            raise ConfigError(f"--role {r!r}: expected COLUMN=ROLE, ROLE one of {', '.join(ROLES)}")
        if role not in ROLES:
            raise ConfigError(f"--role {r!r}: unknown role {role!r}; expected one of {', '.join(ROLES)}")
        roles[col] = role
    if roles and args.ranker is None:
        raise ConfigError("--role: only with --ranker (roles place the ranker's input columns)")
    start = time.perf_counter()
    m = write_bundle(
        args.retrieval,
        args.out,
        ranker_run=args.ranker,
        index=args.index,
        roles=roles,
        min_item_overlap=args.min_item_overlap,
        force=args.force,
        quantize=args.quantize,
        retrieval_weights=args.retrieval_weights,
        stage1_weight=args.stage1_weight,
    )
    stages = " + ".join(f"{k} ({v.get('model') or ', '.join(v.get('tasks', []))})" for k, v in m["stages"].items())
    print(
        f"bundle {args.out}: version {m['version']}, {stages}, {m['items']:,} items, search {m['search']}, "
        f"{len(m['files'])} files ({time.perf_counter() - start:.1f}s)"
    )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from ranker.serving.app import serve
    from ranker.serving.store import check_store_url

    check_store_url(args.store)  # before the bundle is read and any worker starts
    serve(
        args.bundle,
        store=args.store,
        host=args.host,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        max_body=args.max_body,
        watch=args.watch_interval if args.watch else None,
    )
    return 0


def _cmd_recommend(args: argparse.Namespace) -> int:
    from ranker.serving.batch import open_for_batch, read_users, recommend_file
    from ranker.serving.store import check_store_url, open_store

    users = read_users(args.users)
    check_store_url(args.store)
    store = open_store(args.store)
    start = time.perf_counter()
    n = recommend_file(open_for_batch(args.bundle, store), users, args.out, k=args.k, n_candidates=args.n_candidates)
    store.close()
    print(f"{n:,} rows for {len(users):,} users → {args.out} ({time.perf_counter() - start:.1f}s)")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from ranker.serving.batch import predict_file

    start = time.perf_counter()
    n = predict_file(args.source, args.rows, args.out, chunk=args.chunk)
    print(f"{n:,} rows scored → {args.out} ({time.perf_counter() - start:.1f}s)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ranker.serving.export import export_run

    start = time.perf_counter()
    r = export_run(args.run_dir, args.format, args.out)
    print(
        f"{args.format} → {r['path']} (inputs: {r['inputs']}); loaded back, max |exported − eager| "
        f"{r['max_abs_diff']:.2e} ({time.perf_counter() - start:.1f}s)"
    )
    return 0


def _cmd_events_load(args: argparse.Namespace) -> int:
    from ranker.serving.store import load_file, open_store

    store = open_store(args.store)
    start = time.perf_counter()
    delimiter = "\t" if args.delimiter in ("\\t", "tab") else args.delimiter
    n = load_file(
        store,
        args.file,
        user_column=args.user_column,
        item_column=args.item_column,
        action_column=args.action_column,
        time_column=args.time_column,
        delimiter=delimiter,
        column_names=args.column_names.split(",") if args.column_names else None,
        chunk=args.chunk,
    )
    store.close()
    seconds = time.perf_counter() - start
    print(f"{n:,} events from {args.file} into {args.store} ({seconds:.1f}s, {n / max(seconds, 1e-9):,.0f} events/s)")
    return 0


# ---------------------------------------------------------------------- output


def _positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (a clear usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    """argparse type: a TCP port, 1..65535."""
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1..65535, got {value}")
    return value


def _share(text: str) -> float:
    """argparse type: a share in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a share is in [0, 1] (0.9 = 90%), got {text}")
    return value


def _default_out(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _fmt(x: Any) -> str:
    return "  n/a " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _best(metrics: dict[str, Any]) -> str:
    """The selected epoch, or "none" where no validation score was a number."""
    best = metrics.get("best_epoch")
    return "none" if best is None else str(best)


def _ranking_summary(cfg: Any, metrics: dict[str, Any], out: Path, seconds: float) -> None:
    _print_summary(metrics, out, seconds)


def _print_summary(metrics: dict[str, Any], out: Path, seconds: float) -> None:
    test, base = metrics.get("test", {}), metrics.get("baseline", {}).get("test", {})
    name = metrics.get("baseline", {}).get("name", "baseline")
    print(
        f"\ntest metrics (best epoch {_best(metrics)}, {metrics['params']:,} parameters, "
        f"{metrics['train_samples_per_s']:,.0f} train samples/s)"
    )
    print(f"{'task':<16}{'AUC':>8}{'GAUC':>8}{'logloss':>9}   {name + ' AUC':>16}{'GAUC':>8}")
    for task, m in test.items():
        b = base.get(task, {})
        if "rmse" in m:
            print(
                f"{task:<16}RMSE {_fmt(m['rmse'])}  MAE {_fmt(m.get('mae'))}  (regression; constant train mean "
                f"{_fmt(b.get('mean'))}: RMSE {_fmt(b.get('rmse'))}  MAE {_fmt(b.get('mae'))})"
            )
            continue
        print(
            f"{task:<16}{_fmt(m.get('auc')):>8}{_fmt(m.get('gauc')):>8}{_fmt(m.get('logloss')):>9}"
            f"   {_fmt(b.get('auc')):>16}{_fmt(b.get('gauc')):>8}"
        )
    for gate, g in metrics.get("gates", {}).items():
        print(
            f"gate {gate}: entropy {g['entropy']:.3f}, usage entropy {g['usage_entropy']:.3f} "
            f"(max {g['max_entropy']:.3f}), mean weights {g['weights']}"
        )
    if "ceiling" in metrics:
        c = metrics["ceiling"]
        print(
            "true generating probabilities (the ceiling): "
            + ", ".join(f"{t} AUC {_fmt(c['ceiling_auc'].get(t))} GAUC {_fmt(c['ceiling_gauc'].get(t))}" for t in test)
        )
    print(f"\nrun directory: {out}  (report: {out / 'report.html'})  total {seconds:.0f}s")


SUMMARIES = {"ranking": _ranking_summary, "retrieval": _retrieval_summary, "generative": _generative_summary}


if __name__ == "__main__":
    sys.exit(main())
