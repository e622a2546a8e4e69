"""A serving bundle: one self-contained, verified directory with both stages.

``ranker bundle --retrieval RUN [--ranker RUN] --out DIR`` writes (:func:`write_bundle`)::

    manifest.json          format, version, the source runs, search kind, sha256 + size of every file
    retrieval/             a retrieval run directory (config.yaml, model.safetensors,
                           items.parquet, data.json; histories.parquet left empty; its own
                           manifest.json over these copies): loads with ranker.retrieval.run.load_run
    retrieval-2/, …        with several --retrieval runs: the other members of the ensemble
                           (ranker.retrieval.ensemble; weights in the manifest's stages)
    catalogue.parquet      `item` raw id (row k-1 = internal item k), `popularity` (events in
                           the retrieval data), then the ranker's item columns (latest values)
    index.faiss            faiss index over the item vectors (absent with --index exact)
    stage 2, a feature ranker (--ranker RUN of kind ranking):
    ranker/                a ranking run directory (config.yaml, preprocessor.json,
                           model.safetensors, manifest.json): loads with ranker.ranking.run.load_run
    users.parquet          the ranker's user columns, latest value per user (raw user id `user`)
    features.json          where each ranker input column comes from (ranker.serving.features)
    serving.json           with --quantize / --stage1-weight only: {"quantize": "int8",
                           "stage1_weight": w} (ranker.serving.quantize; the fused order below)
    stage 2, a generative HSTU ranker (--ranker RUN of kind generative; ranker.serving.generative):
    generative/            a generative run directory (config.yaml, model.safetensors,
                           model_shape.json, items.parquet, actions.parquet)
    static.parquet         every user's static token ids; generative.json: tasks, actions

With ``--stage1-weight w`` (either kind of ranker) ``/recommend`` orders the candidates by
``logit(s) + w · s1``: the ranker's serving score s (a probability: :func:`check_fusion`)
fused with the candidate's stage-1 score, the list ``benchmarks/two_stage.py`` measures as
"+ stage-1 score" with w picked on validation (:func:`ranker.twostage.evaluate.fuse`).

Nothing is read outside the directory at load (:func:`load_bundle`): every file's sha256 is
checked against the manifest first, and a missing or changed file is refused by name. The
directory is resolved once (a symlink such as ``bundles/current`` is followed at load, then
every file is read from its target), so repointing the link during a load cannot mix two
bundles. The two stages must share item ids: at bundle and at load, the ranker's item
vocabulary (the feature ranker's preprocessor vocabulary, the generative run's
``items.parquet``) must be of the catalogue's id type and mostly inside it
(``min_item_overlap``), else the bundle is refused naming both files. The runs are verified
against their own manifests when bundled; inside the bundle, the bundle's manifest supersedes
them (it covers every file of the copies, their run manifests included), and each copy carries a
run manifest re-written over what was copied (``histories.parquet`` is emptied, a generative
run keeps only the files serving reads), so each copy also verifies as a run directory.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from ranker.config.schema import NumericalFeature
from ranker.errors import ConfigError
from ranker.models.ranker import Ranker
from ranker.models.sequential import Retriever
from ranker.run_manifest import MANIFEST, file_sha256, seal_run
from ranker.serving.candidates import CandidateEncoder, RowColumns
from ranker.serving.features import (
    DERIVED_DEFAULTS,
    DERIVED_ROLES,
    HistoryColumns,
    column_roles,
    history_columns,
    input_columns,
    latest_by_key,
)
from ranker.serving.quantize import QUANTIZE, quantize_model
from ranker.serving.store import raw_id

if TYPE_CHECKING:
    from ranker.serving.generative import GenerativeStage

FORMAT = "ranker-bundle/1"
SERVING_FILE = "serving.json"  # serving options of the ranker (`--quantize`), when any
ROLES = ("user", "item", "context", *DERIVED_ROLES)


class BundleError(ConfigError):
    """A bundle that cannot be served: a file missing or changed, or stages that do not fit."""


@dataclass
class RetrievalStage:
    cfg: Any
    model: Any  # SequentialRetriever in eval mode
    items: pa.Array  # raw ids, row k-1 = internal item k
    popularity: np.ndarray  # (I,) events per catalogue item
    catalogue: pa.Table  # catalogue.parquet: item, popularity, the ranker's item columns
    index: Any | None  # faiss index over rows 1..I of the item table, or None (exact search)
    item_vectors: torch.Tensor  # (I + 1, D), row 0 padding


@dataclass
class RankingStage:
    cfg: Any  # RunConfig
    model: Ranker  # eval mode; linear layers int8 with --quantize
    pre: Any  # Preprocessor without tasks (no label columns needed)
    spec: Any  # TaskSpec
    user_key: str | None
    item_key: str
    item_features: pa.Table  # the ranker's item columns, aligned with the catalogue
    users: dict[str, dict[str, Any]]  # raw user id -> {column: pa.Scalar}
    user_columns: list[str]
    context_columns: list[str]
    history: HistoryColumns | None
    candidates: CandidateEncoder  # the request's batch; the catalogue's item columns encoded at load

    @property
    def derived(self) -> set[str]:
        """The derived roles (features.DERIVED_ROLES) its input columns have."""
        return {role for _, role in self.candidates.columns.derived}


@dataclass
class Bundle:
    path: Path  # as given (e.g. a symlink that a deploy repoints; POST /reload re-reads it)
    manifest: dict[str, Any]
    retrieval: RetrievalStage
    ranking: RankingStage | GenerativeStage | None
    directory: Path  # the resolved directory the files were read from
    manifest_sha256: str  # of the manifest file as verified (what the --watch poll compares)
    stage1_weight: float | None = None  # /recommend orders by logit(s) + w · s1 (--stage1-weight)

    @property
    def version(self) -> str:
        return str(self.manifest["version"])


# ---------------------------------------------------------------------- write


def write_bundle(
    retrieval_run: Path | Sequence[Path],
    out: Path,
    *,
    ranker_run: Path | None = None,
    index: str = "auto",
    roles: dict[str, str] | None = None,
    min_item_overlap: float = 0.9,
    force: bool = False,
    quantize: str | None = None,
    retrieval_weights: Sequence[float] | None = None,
    stage1_weight: float | None = None,
) -> dict[str, Any]:
    """Validate the runs, write the bundle into `out` (atomically: a sibling temp dir renamed).
    `quantize` ("int8"): the ranker is served with int8 linear layers (:mod:`ranker.serving.quantize`).
    Several retrieval runs (on the same events) are served as one ensemble with `retrieval_weights`
    (:mod:`ranker.retrieval.ensemble`), copied to ``retrieval/``, ``retrieval-2/``, …
    `stage1_weight` w: ``/recommend`` orders by ``logit(s) + w · s1`` (module doc)."""
    from ranker.families import family_of_run, require_family
    from ranker.retrieval.ensemble import load_stage1

    out = Path(out)
    runs = [Path(retrieval_run)] if isinstance(retrieval_run, (str, Path)) else [Path(r) for r in retrieval_run]
    if out.exists() and not force:
        raise ConfigError(f"--out {out}: exists (pass --force to replace it)")
    for run in runs:
        require_family(run, "retrieval", "--retrieval", "the retrieval stage")
    retrieval_run = runs[0]
    ranker_kind = family_of_run(ranker_run, "--ranker").kind if ranker_run is not None else None  # verified once
    if quantize is not None and (quantize not in QUANTIZE or ranker_kind != "ranking"):
        raise ConfigError(
            f"--quantize {quantize}: needs a feature ranker (--ranker of kind ranking) and one of {', '.join(QUANTIZE)}"
        )
    if stage1_weight is not None and (ranker_run is None or not np.isfinite(stage1_weight)):
        raise ConfigError(
            f"--stage1-weight {stage1_weight}: needs --ranker and a finite number "
            "(it fuses the ranker's probability with the stage-1 score)"
        )
    cfg, model, serving = load_stage1(runs, retrieval_weights)
    items = serving.items
    if ranker_run is not None:  # refuse runs that do not fit before writing anything
        _check_ranker(
            Path(ranker_run), ranker_kind, items, Path(retrieval_run) / "items.parquet", min_item_overlap, roles
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for run, name in zip(runs, retrieval_dirs(len(runs)), strict=True):
            _copy_retrieval(run, tmp / name, serving.histories.schema)
        catalogue = pa.table({"item": items, "popularity": _popularity(items, serving.histories)})
        search = _write_index(model, tmp / "index.faiss", index)
        stages: dict[str, Any] = {"retrieval": {"run": str(Path(retrieval_run).resolve()), "model": cfg.model.kind}}
        if len(runs) > 1:
            stages["retrieval"]["ensemble"] = {
                "runs": [str(r.resolve()) for r in runs],
                "weights": [float(w) for w in (retrieval_weights or [1.0] * len(runs))],
            }
        if ranker_run is not None and ranker_kind == "generative":
            from ranker.serving.generative import write_generative

            info = write_generative(Path(ranker_run), tmp, fused=stage1_weight is not None)
            stages["ranker"] = {**info, "min_item_overlap": min_item_overlap}
        elif ranker_run is not None:
            catalogue, info = _write_ranker(Path(ranker_run), tmp, catalogue, roles or {}, stage1_weight is not None)
            stages["ranker"] = {**info, "min_item_overlap": min_item_overlap, "quantize": quantize}
        options = {k: v for k, v in (("quantize", quantize), ("stage1_weight", stage1_weight)) if v is not None}
        if stage1_weight is not None:
            stages["ranker"]["stage1_weight"] = stage1_weight
        if options:  # a hashed file, so the choices are part of the version
            (tmp / SERVING_FILE).write_text(json.dumps(options))
        pq.write_table(catalogue, tmp / "catalogue.parquet")
        files = _hash_files(tmp)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": _version(files),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "search": search,
            "stages": stages,
            "items": len(items),
            "files": files,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def retrieval_dirs(n: int) -> list[str]:
    """The bundle's directories of `n` retrieval runs: ``retrieval``, ``retrieval-2``, …"""
    return ["retrieval", *(f"retrieval-{k}" for k in range(2, n + 1))]


def _copy_retrieval(run: Path, dest: Path, histories_schema: pa.Schema) -> None:
    dest.mkdir()
    for name in ("config.yaml", "model.safetensors", "items.parquet", "data.json"):
        shutil.copyfile(run / name, dest / name)
    pq.write_table(histories_schema.empty_table(), dest / "histories.parquet")
    seal_run(dest, "retrieval")


def _popularity(items: pa.Array, histories: pa.Table) -> pa.Array:
    flat = pc.list_flatten(histories.column("items"))
    counts = pc.value_counts(flat)
    idx = pc.index_in(items, value_set=counts.field("values"))
    got = counts.field("counts").take(pc.fill_null(idx, 0))
    return pc.if_else(pc.is_null(idx), 0, got).cast(pa.int64())


#: ``--index auto``: exact search up to this many items. One matrix product over a small
#: catalogue is both exact and faster than a graph: on TS-ML1M (3,883 items, width 50, top 200 of
#: the catalogue minus the history) exact took 0.20 ms per request against 0.41 ms for HNSW at
#: efSearch 64, which returned 90.6 % of the exact top 200 (2026-12-06, 300 users, 2 threads).
EXACT_UP_TO = 100_000


def _write_index(model: Any, path: Path, kind: str) -> str:
    if kind == "auto":
        kind = "exact" if int(model.num_items) <= EXACT_UP_TO else "hnsw"
    if kind == "exact":
        return "exact"
    try:
        import faiss

        from ranker.retrieval.ann import build_index
    except ImportError:
        return "exact"  # without faiss the service searches exactly (one matrix product)
    vectors = model.item_vectors()[1:].detach().float().numpy()
    faiss.write_index(build_index(vectors, kind), str(path))  # type: ignore[arg-type]
    return kind


def _check_ranker(
    run: Path, kind: str | None, items: pa.Array, catalogue_file: Path, min_overlap: float, roles: dict[str, str] | None
) -> None:
    """Refuse a stage-2 run (of family `kind`) that cannot serve over this catalogue."""
    from ranker.ranking.run import load_run

    if kind == "generative":
        from ranker.serving.generative import check_generative

        if roles:
            raise ConfigError(f"--role: only for a feature ranker; --ranker {run} is a generative run")
        check_generative(run, items, catalogue_file, min_overlap)
        return
    if kind != "ranking":
        raise ConfigError(
            f"--ranker {run}: a {kind} run; stage 2 is a feature ranker (kind ranking) or a generative ranker"
        )
    cfg, _, pre = load_run(run)
    check_items_fit(pre, cfg.data, items, run / "preprocessor.json", catalogue_file, min_overlap)


def check_fusion(spec: Any, serving: Any, run: Path) -> None:
    """Refuse ``--stage1-weight`` for a ranker whose serving score is not a probability (its
    logit is fused with the stage-1 score)."""
    from ranker.tasks.score import probability_score_problem

    problem = probability_score_problem(spec, serving.weights, serving.combine)
    if problem is not None:
        raise ConfigError(
            f"--stage1-weight: fuses logit(serving score) with the stage-1 score, but in --ranker {run} "
            f"(serving: in its config.yaml) {problem}, so its serving score is not a probability"
        )


def _write_ranker(
    run: Path, tmp: Path, catalogue: pa.Table, roles: dict[str, str], fused: bool = False
) -> tuple[pa.Table, dict[str, Any]]:
    from ranker.ranking.run import load_run, resolve_data
    from ranker.tasks import TaskSpec

    cfg, _, _ = load_run(run)
    if fused:
        check_fusion(TaskSpec.from_tasks(cfg.data.tasks), cfg.serving, run)
    data, tables = resolve_data(cfg.data)
    table = pa.concat_tables([tables[s] for s in ("train", "valid", "test")], promote_options="default")
    user_key, item_key = data.group_column, _item_key(data, run)
    found = column_roles(table, input_columns(data), user_key, item_key)
    numerical = {f.column or f.name for f in data.features if isinstance(f, NumericalFeature)}
    for col, role in DERIVED_DEFAULTS.items():
        if col in numerical and col in found and found[col]["role"] != "key" and col not in roles:
            found[col] = {**found[col], "role": role, "default": True}
    for col, role in roles.items():
        if col not in found or found[col]["role"] == "key":
            raise ConfigError(
                f"--role {col}={role}: not an input column of the ranker "
                f"({', '.join(c for c, r in found.items() if r['role'] != 'key')})"
            )
        if role not in ROLES or (role == "user" and user_key is None):
            raise ConfigError(f"--role {col}={role}: expected one of {', '.join(ROLES)}")
        if role in DERIVED_ROLES and col not in numerical:
            raise ConfigError(f"--role {col}={role}: the service computes a number; {col!r} feeds no numerical feature")
        found[col] = {**found[col], "role": role, "forced": True}
    by_role = {r: [c for c, v in found.items() if v["role"] == r] for r in ROLES}
    item_table = latest_by_key(table, item_key, by_role["item"])
    cat_ids = catalogue.column("item").combine_chunks()
    idx = pc.index_in(cat_ids, value_set=item_table.column(item_key).combine_chunks().cast(cat_ids.type))
    for col in by_role["item"]:
        catalogue = catalogue.append_column(col, item_table.column(col).take(idx))
    if user_key is not None:
        users = latest_by_key(table, user_key, by_role["user"])
        users = users.rename_columns(["user", *by_role["user"]])
        pq.write_table(users, tmp / "users.parquet")
    dest = tmp / "ranker"
    dest.mkdir()
    for name in ("config.yaml", "preprocessor.json", "model.safetensors"):
        shutil.copyfile(run / name, dest / name)
    seal_run(dest, "ranking")
    hist = history_columns(data)
    features = {
        "user_key": user_key,
        "item_key": item_key,
        "columns": found,
        "history": None if hist is None else hist.__dict__,
    }
    (tmp / "features.json").write_text(json.dumps(features, indent=2))
    return catalogue, {"kind": "ranking", "run": str(run.resolve()), "tasks": [t.name for t in data.tasks]}


def _item_key(data: Any, run: Path) -> str:
    if data.item_column is None:
        raise ConfigError(
            f"--ranker {run}: its data.item_column is not set; serving needs to know "
            "which column holds the candidate item"
        )
    return str(data.item_column)


def item_feature(pre: Any, data: Any) -> str:
    """The name of the categorical feature that holds the ranker's item id."""
    from ranker.config.schema import CategoricalFeature

    for f in pre.features:
        if isinstance(f, CategoricalFeature) and (f.column or f.name) == data.item_column:
            return str(f.vocab_from or f.name)
    raise ConfigError(f"data.item_column {data.item_column!r}: no categorical feature reads it")


def check_items_fit(
    pre: Any, data: Any, items: pa.Array, pre_file: Path, catalogue_file: Path, min_overlap: float
) -> None:
    """Refuse a feature ranker whose item vocabulary is not the catalogue's ids (type, then overlap)."""
    if data.item_column is None:
        raise BundleError(f"{pre_file}: the ranker's config has no data.item_column")
    vocab = pre.vocab_of(item_feature(pre, data))
    check_ids_fit(vocab.values, pre_file, items, catalogue_file, min_overlap)


def check_ids_fit(vocab: pa.Array, vocab_file: Path, items: pa.Array, catalogue_file: Path, min_overlap: float) -> None:
    """Refuse a stage-2 item vocabulary (raw ids, kept in `vocab_file`) that is not the retrieval
    catalogue's: another id type, or less than `min_overlap` of it inside the catalogue."""
    kind = "int" if pa.types.is_integer(vocab.type) else "str"
    cat_type = "int" if pa.types.is_integer(items.type) else "str"
    if kind != cat_type:
        raise BundleError(
            f"{vocab_file}: the ranker's item ids are {kind} but the retrieval "
            f"catalogue {catalogue_file} holds {cat_type} ids: the runs do not fit together"
        )
    inside = pc.is_in(vocab, value_set=items.cast(vocab.type))
    share = float(pc.mean(pc.cast(inside, pa.float64())).as_py() or 0.0) if len(vocab) else 1.0
    if share < min_overlap:
        outside = vocab.filter(pc.invert(inside)).slice(0, 5).to_pylist()
        raise BundleError(
            f"{vocab_file}: only {share:.0%} of the ranker's {len(vocab)} item ids are in the "
            f"retrieval catalogue {catalogue_file} ({len(items)} items; e.g. {outside} are not): the "
            f"item vocabularies differ, so the runs were trained on different items"
        )


# ---------------------------------------------------------------------- verify and load


def _hash_files(root: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p != root / MANIFEST:  # the runs' own manifests are bundle files too
            out[p.relative_to(root).as_posix()] = {"sha256": file_sha256(p), "bytes": p.stat().st_size}
    return out


def _version(files: dict[str, dict[str, Any]]) -> str:
    text = "\n".join(f"{name} {v['sha256']}" for name, v in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def verify_bundle(path: Path) -> dict[str, Any]:
    """The manifest, once every file it lists is present with its sha256 (BundleError naming
    the first file that is not)."""
    return _verify(Path(path))[0]


def _verify(path: Path) -> tuple[dict[str, Any], str]:
    """:func:`verify_bundle`, and the sha256 of the manifest file's bytes that were verified."""
    mf = path / "manifest.json"
    if not mf.is_file():
        raise BundleError(f"{mf}: missing (not a bundle directory; make one with `ranker bundle`)")
    raw = mf.read_bytes()
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mf}: not valid JSON ({exc})") from None
    if isinstance(manifest, dict) and str(manifest.get("format", "")).startswith("ranker-run/"):
        raise BundleError(f"{path}: a run directory, not a bundle (make one with `ranker bundle --retrieval {path}`)")
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        raise BundleError(f"{mf}: not a {FORMAT} manifest")
    for name, meta in manifest["files"].items():
        inside = not Path(name).is_absolute() and ".." not in Path(name).parts
        if (
            not (inside and isinstance(meta, dict) and isinstance(meta.get("sha256"), str))
            or type(meta.get("bytes")) is not int
        ):
            raise BundleError(f"{mf}: its entry {name!r} is malformed (the manifest was edited)")
    if _version(manifest["files"]) != manifest.get("version"):
        raise BundleError(f"{mf}: its version does not match its file list (the manifest was edited)")
    for name, meta in sorted(manifest["files"].items()):
        p = path / name
        if not p.is_file():
            raise BundleError(f"{p}: listed in the manifest but missing")
        if p.stat().st_size != meta["bytes"] or file_sha256(p) != meta["sha256"]:
            raise BundleError(f"{p}: sha256 differs from the manifest (the file was changed after bundling)")
    return manifest, hashlib.sha256(raw).hexdigest()


def load_bundle(path: Path) -> Bundle:
    """Verify then load a bundle: both stages in eval mode, tables in memory."""
    from ranker.retrieval.run import load_run as load_retrieval

    given = Path(path)
    path = given.resolve()  # a symlink is followed once: every file comes from one directory
    manifest, manifest_sha = _verify(path)
    cfg, first, serving = load_retrieval(path / "retrieval", verify=False)  # _verify covered its files
    model: Retriever = first
    ensemble = manifest["stages"]["retrieval"].get("ensemble")
    if ensemble is not None:
        from ranker.retrieval.ensemble import RetrieverEnsemble

        names = retrieval_dirs(len(ensemble["weights"]))
        members = [first, *(load_retrieval(path / n, verify=False)[1] for n in names[1:])]
        model = RetrieverEnsemble(members, ensemble["weights"]).eval()
    catalogue = pq.read_table(path / "catalogue.parquet")
    index = None
    if manifest["search"] != "exact":
        import faiss

        index = faiss.read_index(str(path / "index.faiss"))
    with torch.inference_mode():
        vectors = model.item_vectors().detach().float().clone()
    retrieval = RetrievalStage(
        cfg, model, serving.items, catalogue.column("popularity").to_numpy(), catalogue, index, vectors
    )
    ranker = manifest["stages"].get("ranker")
    # serving options count only when the manifest lists (hence verified) their file
    options = json.loads((path / SERVING_FILE).read_text()) if SERVING_FILE in manifest["files"] else {}
    quantize = options.get("quantize")
    stage1_weight = options.get("stage1_weight")
    ranking: RankingStage | GenerativeStage | None = None
    if ranker is not None and ranker.get("kind") == "generative":
        from ranker.serving.generative import load_generative

        ranking = load_generative(path, serving.items, float(ranker.get("min_item_overlap", 0.0)))
    elif ranker is not None:
        ranking = _load_ranking(path, catalogue, serving.items, float(ranker.get("min_item_overlap", 0.0)), quantize)
    return Bundle(given, manifest, retrieval, ranking, path, manifest_sha, stage1_weight)


def _load_ranking(
    path: Path, catalogue: pa.Table, items: pa.Array, min_overlap: float, quantize: str | None
) -> RankingStage:
    from ranker.data.preprocess import Preprocessor
    from ranker.ranking.run import load_run
    from ranker.tasks import TaskSpec

    cfg, model, pre = load_run(path / "ranker", verify=False)  # verify_bundle covered its files
    check_items_fit(
        pre, cfg.data, items, path / "ranker" / "preprocessor.json", path / "retrieval" / "items.parquet", min_overlap
    )
    assert isinstance(model, Ranker)
    if quantize is not None:
        model = quantize_model(model, quantize)
    features = json.loads((path / "features.json").read_text())
    cols = features["columns"]
    by_role = {r: [c for c, v in cols.items() if v["role"] == r] for r in ROLES}
    users: dict[str, dict[str, Any]] = {}
    if features["user_key"] is not None and (path / "users.parquet").is_file():
        table = pq.read_table(path / "users.parquet")
        values = {c: table.column(c).combine_chunks() for c in by_role["user"]}
        for i, u in enumerate(table.column("user").to_pylist()):
            users[raw_id(u)] = {c: v[i] for c, v in values.items()}
    state = pre.state_dict()
    serving_pre = Preprocessor.from_state({**state, "tasks": []})
    hist = None if features["history"] is None else HistoryColumns(**features["history"])
    item_features = catalogue.select(by_role["item"])
    derived = tuple((c, v["role"]) for c, v in cols.items() if v["role"] in DERIVED_ROLES)
    columns = RowColumns(
        features["user_key"], features["item_key"], tuple(by_role["user"]), tuple(by_role["context"]), hist, derived
    )
    return RankingStage(
        cfg,
        model,
        serving_pre,
        TaskSpec.from_tasks(pre.tasks),
        features["user_key"],
        features["item_key"],
        item_features,
        users,
        by_role["user"],
        by_role["context"],
        hist,
        CandidateEncoder(serving_pre, columns, items, item_features),
    )
