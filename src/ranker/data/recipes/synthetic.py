"""The ``synthetic`` dataset: a generated interaction log whose ground truth is known.

The default dataset of ``ranker demo``: nothing to download, drawn from
``numpy.random.default_rng(seed)`` (same seed, same arrays), sized so that a small neural ranker
trains in about a minute on a CPU. Ground truth, i.e. everything a model can learn:

* **Users** (``user_id`` 1..U): a ``country`` (10, Zipf-skewed), a ``device`` (android / ios /
  web, each with a view bias), an ``age``; a latent taste t_u in R^8 = country centre + age
  direction·age + personal noise (centred over users); a view and a like propensity; an activity
  (lognormal, mean 60 exposures) inside an active window of days (some join late: new users).
* **Items** (``item_id`` 1..I): a ``category`` (20, skewed) and ``tags`` (1–3 of 30, 70 % from 3
  "home" tags of the category); a latent v_i = category centre + mean tag vector + noise, scaled
  to a common norm; a view bias per tag; a lognormal ``price`` whose level depends on the category;
  a Zipf popularity that sets how often the item is shown and, partly, its quality.
* **Exposures**: sessions of ~6 exposures, 45 s apart, starting at an hour drawn from a diurnal
  profile (evening peak) on a day of the user's window, over 60 days from 2021-01-01 UTC; ``hour``
  ("00".."23") and ``weekday`` ("mon".."sun") derive from ``timestamp``. The item is drawn from
  popularity (55 %) or from the user's relevance softmax(2·t_u·v_i) (45 %).
* **view** ~ Bernoulli(σ(z)), z = t_u·v_i + item quality + mean tag bias + evening affinity of the
  category·[18h–23h] + weekend affinity of the category·[sat, sun] − 0.3·z(log price) + device
  bias + user view propensity + 1.2·log1p(r) + b. r is the user's *recent interest* in the
  item's category: that user's views of the category, decayed with a 4-day time constant, as of
  the start of the current half-day (strictly earlier views only; this is the history effect).
* **like** (only when view = 1) ~ Bernoulli(σ(z')), z' = 2·t_u·v_i + user like propensity
  − s(age)·z(log price) + category like quality + country × category like affinity + b', with
  s = (36 − age)/12 clipped to ±1.5: young users like cheap items, older ones premium items.
* b and b' are calibrated (bisection) so that views are ~32 % and likes ~40 % of views.
* Missing on purpose: 1 % of rows have ``age`` null and 2 % ``price`` NaN (the truth uses the
  real values).
* ``hist_item`` / ``hist_action`` (1 = viewed, 2 = liked) / ``hist_seconds``: the user's last 30
  *viewed* exposures strictly before the row's time (:func:`ranker.data.history.build_histories`).
* Split by time: first 80 % of rows by timestamp train, next 10 % valid, last 10 % test.

The manifest's ``meta`` holds the test AUC / GAUC of the true probabilities (the Bayes ceiling)
and of the popularity baseline (item's train positive rate) for both tasks.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ranker.data.history import build_histories
from ranker.data.recipes.base import BuiltRanking, Recipe, split_bounds
from ranker.metrics.ranking import grouped_auc

COUNTRIES = ("US", "IN", "BR", "GB", "DE", "FR", "JP", "MX", "NG", "ID")
DEVICES = ("android", "ios", "web")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
T0 = 1_609_459_200  # 2021-01-01 00:00:00 UTC
DAY = 86_400
HISTORY_LEN = 30
_DEVICE_P = np.array([0.55, 0.30, 0.15])
_DEVICE_BIAS = np.array([0.1, 0.25, -0.35])
_H = np.arange(24)
_HOUR_P = 0.25 + 2.0 * np.exp(-(((_H - 20.5) / 2.5) ** 2)) + 0.8 * np.exp(-(((_H - 12.5) / 2.5) ** 2))
_HOUR_P = _HOUR_P / _HOUR_P.sum()
_VIEW_RATE = 0.27  # calibration targets (the view one before the repeat-interest term)
_LIKE_RATE = 0.40


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator; the defaults give ~186k rows (train ~149k)."""

    n_users: int = 3000
    n_items: int = 1500
    n_categories: int = 20
    n_tags: int = 30
    dim: int = 8
    mean_exposures: float = 60.0
    days: int = 60
    seed: int = 2021


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


def _intercept(logits: np.ndarray, rate: float) -> float:
    """The constant b with mean(σ(logits + b)) = rate (bisection)."""
    lo, hi = -15.0, 15.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _sigmoid(logits + mid).mean() < rate else (lo, mid)
    return (lo + hi) / 2


def _item_tags(rng: np.random.Generator, category: np.ndarray, n_c: int, n_t: int) -> np.ndarray:
    """(I, 3) distinct tag indices per item, 1–3 used (first), -1 padding; 70 % "home" tags."""
    n_i = category.size
    home = np.argsort(rng.random((n_c, n_t)), axis=1)[:, :3]
    cand = np.where(
        rng.random((n_i, 3)) < 0.7,
        home[category[:, None], rng.integers(0, 3, (n_i, 3))],
        rng.integers(0, n_t, (n_i, 3)),
    )
    cand = np.sort(np.where(np.arange(3) < rng.integers(1, 4, n_i)[:, None], cand, n_t), axis=1)
    dup = np.zeros_like(cand, dtype=bool)
    dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
    tags = np.sort(np.where(dup, n_t, cand), axis=1)  # unused (n_t) and duplicates sort last
    return np.where(tags == n_t, -1, tags)


def generate_log(config: SyntheticConfig | None = None, **overrides: Any) -> dict[str, np.ndarray]:
    """Draw the interaction log; rows in time order (stable sort), one array per column.

    ``generate_log(seed=7, n_users=500)`` overrides fields of :class:`SyntheticConfig`. Besides the
    table columns (``tags`` is an (N, 3) int64 array of tag indices, -1 = none), the result holds
    the true probabilities ``p_view`` and ``p_like`` (of like given view) of every row.
    """
    cfg = replace(config or SyntheticConfig(), **overrides)
    rng = np.random.default_rng(cfg.seed)
    n_u, n_i, n_c, n_t, dim = cfg.n_users, cfg.n_items, cfg.n_categories, cfg.n_tags, cfg.dim

    # Users.
    country_p = 1.0 / np.arange(1, len(COUNTRIES) + 1) ** 1.1
    country = rng.choice(len(COUNTRIES), n_u, p=country_p / country_p.sum())
    device = rng.choice(len(DEVICES), n_u, p=_DEVICE_P)
    age = np.clip(rng.normal(36.0, 11.0, n_u), 16, 75).round()
    taste = (
        0.8 * rng.normal(0.0, 1.0, (len(COUNTRIES), dim))[country]
        + 0.6 * ((age - 36.0) / 11.0)[:, None] * rng.normal(0.0, 1.0, dim)
        + 0.6 * rng.normal(0.0, 1.0, (n_u, dim))
    ) / np.sqrt(1.36 * dim)
    taste -= taste.mean(0)  # no "mainstream" taste: on average a user matches no item
    view_prop, like_prop = rng.normal(0.0, 0.5, n_u), rng.normal(0.0, 0.7, n_u)
    mu = np.log(cfg.mean_exposures) - 0.32  # lognormal(mu, 0.8) has mean `mean_exposures`
    activity = np.rint(rng.lognormal(mu, 0.8, n_u)).clip(5, 20 * cfg.mean_exposures).astype(int)

    # Items.
    cat_p = 1.0 / (np.arange(n_c) + 3.0)
    category = rng.choice(n_c, n_i, p=cat_p / cat_p.sum())
    tags = _item_tags(rng, category, n_c, n_t)
    has_tag = tags >= 0
    n_tags = has_tag.sum(1, keepdims=True)
    tag_bias, tag_vec = rng.normal(0.0, 0.4, n_t), rng.normal(0.0, 0.6, (n_t, dim))
    latent = (
        rng.normal(0.0, 0.8, (n_c, dim))[category]
        + np.where(has_tag[:, :, None], tag_vec[tags], 0.0).sum(1) / n_tags
        + rng.normal(0.0, 0.3, (n_i, dim))
    )
    latent *= np.sqrt(0.85 * dim) / np.linalg.norm(latent, axis=1, keepdims=True)
    item_tag_bias = np.where(has_tag, tag_bias[tags], 0.0).sum(1) / n_tags[:, 0]
    log_price = rng.normal(3.0, 0.6, n_c)[category] + rng.normal(0.0, 0.7, n_i)
    price_z = _zscore(log_price)
    pop = (rng.permutation(n_i) + 1.0) ** -0.9
    pop /= pop.sum()
    quality = 0.4 * _zscore(np.log(pop)) + rng.normal(0.0, 0.3, n_i)
    evening_aff, weekend_aff = rng.normal(0.0, 1.0, n_c), rng.normal(0.0, 0.4, n_c)
    like_quality = rng.normal(0.0, 0.3, n_c)
    country_like = rng.normal(0.0, 0.7, (len(COUNTRIES), n_c))

    # Exposures: which item (popularity or relevance, by inverse CDF per user row) and when.
    user = np.repeat(np.arange(n_u), activity)
    n = user.size
    rel = np.exp(2.0 * (taste @ latent.T))
    cdf = (np.cumsum(rel, axis=1) / rel.sum(1, keepdims=True) + np.arange(n_u)[:, None]).ravel()
    rel_item = np.minimum(np.searchsorted(cdf, user + rng.random(n)) - user * n_i, n_i - 1)
    item = np.where(rng.random(n) < 0.55, rng.choice(n_i, n, p=pop), rel_item)
    n_sess = np.maximum(1, np.ceil(activity / 6.0).astype(np.int64))
    first = np.clip(rng.uniform(-0.6, 0.8, n_u) * cfg.days, 0, cfg.days - 1)
    last = np.clip(first + rng.uniform(0.3, 1.0, n_u) * cfg.days, first + 1, cfg.days)
    sess_user = np.repeat(np.arange(n_u), n_sess)
    sess_day = first[sess_user] + rng.random(sess_user.size) * (last - first)[sess_user]
    sess_start = (
        T0
        + sess_day.astype(np.int64) * DAY
        + rng.choice(24, sess_user.size, p=_HOUR_P) * 3600
        + rng.integers(0, 3600, sess_user.size)
    )
    session = np.concatenate([[0], np.cumsum(n_sess)[:-1]])[user] + rng.integers(0, n_sess[user])
    by_sess = np.argsort(session, kind="stable")
    run_start = np.flatnonzero(np.r_[True, np.diff(session[by_sess]) != 0])
    position = np.empty(n, dtype=np.int64)
    position[by_sess] = np.arange(n) - np.repeat(run_start, np.diff(np.r_[run_start, n]))
    ts = sess_start[session] + 45 * position + rng.integers(0, 45, n)

    order = np.argsort(ts, kind="stable")  # from here on, rows are in time order
    user, item, ts = user[order], item[order], ts[order].astype(np.int64)
    cat = category[item]
    hour, weekday = (ts // 3600) % 24, (ts // DAY + 3) % 7  # 1970-01-01 was a Thursday
    match = np.einsum("nd,nd->n", taste[user], latent[item])
    static = (
        match
        + quality[item]
        + item_tag_bias[item]
        + evening_aff[cat] * ((hour >= 18) & (hour <= 23))
        + weekend_aff[cat] * (weekday >= 5)
        - 0.3 * price_z[item]
        + _DEVICE_BIAS[device[user]]
        + view_prop[user]
    )
    static += _intercept(static, _VIEW_RATE)
    sensitivity = np.clip((36.0 - age[user]) / 12.0, -1.5, 1.5)
    z_like = (
        2.0 * match
        + like_prop[user]
        - sensitivity * price_z[item]
        + like_quality[cat]
        + country_like[country[user], cat]
    )
    u_view, u_like = rng.random(n), rng.random(n)

    # Repeat interest, in half-day chunks: views feed a decayed (user, category) interest.
    tau = 4.0 * DAY
    edges = np.append(T0 + np.arange(2 * cfg.days) * (DAY // 2), ts.max() + 1)
    bounds = np.searchsorted(ts, edges)
    interest = np.zeros((n_u, n_c))
    p_view = np.empty(n)
    for k in range(len(edges) - 1):
        rows = np.arange(bounds[k], bounds[k + 1])
        p_view[rows] = _sigmoid(static[rows] + 1.2 * np.log1p(interest[user[rows], cat[rows]]))
        seen = rows[u_view[rows] < p_view[rows]]
        interest *= np.exp(-(edges[k + 1] - edges[k]) / tau)
        np.add.at(interest, (user[seen], cat[seen]), np.exp(-(edges[k + 1] - ts[seen]) / tau))
    view = u_view < p_view
    p_like = _sigmoid(z_like + _intercept(z_like[view], _LIKE_RATE))
    like = view & (u_like < p_like)

    return {
        "user_id": user + 1,
        "country": np.array(COUNTRIES)[country[user]],
        "device": np.array(DEVICES)[device[user]],
        "age": np.where(rng.random(n) < 0.01, np.nan, age[user]),
        "item_id": item + 1,
        "category": np.char.add("c", np.char.zfill(cat.astype(str), 2)),
        "tags": tags[item],
        "price": np.where(rng.random(n) < 0.02, np.nan, np.round(np.exp(log_price), 2)[item]),
        "hour": np.char.zfill(hour.astype(str), 2),
        "weekday": np.array(WEEKDAYS)[weekday],
        "timestamp": ts,
        "view": view.astype(np.int64),
        "like": like.astype(np.int64),
        "p_view": p_view,
        "p_like": p_like,
    }


def _auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Mann–Whitney AUC (ties count 1/2); with ``groups``, GAUC: the per-group AUCs
    (:func:`ranker.metrics.ranking.grouped_auc`) averaged with weights = the group's rows, over
    groups holding both labels. ``nan`` if there is none."""
    y, s = np.asarray(labels, dtype=np.int64).reshape(-1), np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.size == 0:
        return float("nan")
    g = np.zeros(y.size, np.int64) if groups is None else np.unique(groups, return_inverse=True)[1].reshape(-1)
    per_group, rows = grouped_auc(y, s, g)
    ok = ~np.isnan(per_group)
    return float(np.average(per_group[ok], weights=rows[ok])) if ok.any() else float("nan")


def _popularity(train_items: np.ndarray, train_labels: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Popularity baseline: each item's train positive rate (the global rate if unseen)."""
    size = int(max(train_items.max(initial=0), items.max(initial=0))) + 1
    shown = np.bincount(train_items, minlength=size).astype(np.float64)
    hits = np.bincount(train_items, weights=train_labels, minlength=size)
    rate = np.where(shown > 0, hits / np.maximum(shown, 1.0), train_labels.mean())
    return rate[items]


def build_tables(log: dict[str, np.ndarray]) -> dict[str, pa.Table]:
    """Train / valid / test arrow tables of a time-ordered log, with histories of viewed rows."""
    viewed = log["view"] == 1
    uid, ts = log["user_id"], log["timestamp"]
    events = (uid[viewed], ts[viewed], log["item_id"][viewed], 1 + log["like"][viewed])
    hist = build_histories(*events, uid, ts, HISTORY_LEN).to_lists(ts)
    tags = log["tags"]
    tag_names = np.array([f"t{k:02d}" for k in range(int(tags.max()) + 1)])
    tag_offsets = np.concatenate([[0], np.cumsum((tags >= 0).sum(1))]).astype(np.int32)
    columns: dict[str, pa.Array] = {}
    for name in ("user_id", "country", "device", "age", "item_id", "category"):
        columns[name] = pa.array(log[name], from_pandas=True)  # NaN age -> null
    columns["tags"] = pa.ListArray.from_arrays(tag_offsets, pa.array(tag_names[tags[tags >= 0]]))
    columns["price"] = pa.array(log["price"])  # NaN stays NaN
    for name in ("hour", "weekday", "timestamp", "view", "like"):
        columns[name] = pa.array(log[name])
    columns.update(hist_item=hist["items"], hist_action=hist["actions"], hist_seconds=hist["seconds_before"])
    table = pa.table(columns)
    a, b = split_bounds(table.num_rows)
    return {"train": table.slice(0, a), "valid": table.slice(a, b - a), "test": table.slice(b)}


_CATEGORICAL = ("user_id", "country", "device", "item_id", "category", "hour", "weekday")
DATA: dict[str, Any] = {
    "features": [
        *({"kind": "categorical", "name": name} for name in _CATEGORICAL),
        {"kind": "multi_categorical", "name": "tags", "max_len": 3},
        {"kind": "numerical", "name": "age"},
        {"kind": "numerical", "name": "price", "transform": "log1p"},
        {
            "kind": "history",
            "name": "history",
            "item_column": "hist_item",
            "item_feature": "item_id",
            "action_column": "hist_action",
            "time_column": "hist_seconds",
            "max_len": HISTORY_LEN,
        },
    ],
    "tasks": [{"name": "view", "column": "view"}, {"name": "like", "column": "like", "mask_column": "view"}],
    "group_column": "user_id",
    "item_column": "item_id",
}


def summarize(log: dict[str, np.ndarray]) -> dict[str, Any]:
    """Sizes, positive rates, and test AUC / GAUC of the truth (ceiling) and of popularity."""
    n = log["view"].size
    a, b = split_bounds(n)
    out: dict[str, Any] = {
        "rows": {"train": a, "valid": b - a, "test": n - b},
        "users": int(np.unique(log["user_id"]).size),
        "items": int(np.unique(log["item_id"]).size),
        "positive_rate": {
            "view": float(log["view"].mean()),
            "like": float(log["like"].sum() / max(int(log["view"].sum()), 1)),  # of views
        },
    }
    for key in ("ceiling_auc", "ceiling_gauc", "popularity_auc", "popularity_gauc"):
        out[key] = {}
    for task, mask in (("view", np.ones(n, dtype=bool)), ("like", log["view"] == 1)):
        tr, te = np.flatnonzero(mask[:a]), b + np.flatnonzero(mask[b:])
        y, groups = log[task][te], log["user_id"][te]
        pop = _popularity(log["item_id"][tr], log[task][tr], log["item_id"][te])
        out["ceiling_auc"][task] = _auc(y, log[f"p_{task}"][te])
        out["ceiling_gauc"][task] = _auc(y, log[f"p_{task}"][te], groups)
        out["popularity_auc"][task] = _auc(y, pop)
        out["popularity_gauc"][task] = _auc(y, pop, groups)
    return out


def _build(paths: dict[str, Path]) -> BuiltRanking:
    """Generate the default log (the recipe has no source files: `paths` is ignored)."""
    cfg = SyntheticConfig()
    log = generate_log(cfg)
    meta = {"config": asdict(cfg), **summarize(log)}
    return BuiltRanking(tables=build_tables(log), data=copy.deepcopy(DATA), meta=meta)


SYNTHETIC = Recipe(
    name="synthetic",
    protocol="SYNTHETIC",
    kind="ranking",
    summary=(
        "Generated log with a known truth (3k users, 1.5k items, ~186k exposures over 60 days): "
        "view and like-given-view from taste × item, hour × category, price × age, repeat interest"
    ),
    sources=(),
    build=_build,
)

RECIPES = [SYNTHETIC]
