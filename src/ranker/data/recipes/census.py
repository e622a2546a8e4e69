"""MT-Census: two-task prediction on UCI Census-Income (KDD), as in the MMoE paper.

Protocol ``MT-Census`` of ``shared/benchmarks/PROTOCOLS.md``: ``census-income.test`` (99,762 rows,
42 columns; the training file is not staged) is permuted with ``default_rng(2021)`` and cut
80/10/10. Tasks: ``income`` = 1[column 41 == ``50000+.``] and ``never_married`` =
1[column 7 == ``Never married``]. Columns 7 and 41 (labels) and 24 (instance weight) are not
features. Numerical features: columns 0 age, 30 num_persons_worked, 39 weeks_worked
(standardised) and 5 wage_per_hour, 16 capital_gains, 17 capital_losses, 18 dividends
(``log1p``: heavy-tailed, zero for most rows). The other 32 columns are categorical strings
(the numeric industry/occupation recodes too); ``?`` becomes null.

Data: UCI Machine Learning Repository, "Census-Income (KDD)" (T. Lane, R. Kohavi; US Census
Bureau CPS 1994/95, CC BY 4.0). Task setup: J. Ma, Z. Zhao, X. Yi, J. Chen, L. Hong, E. H. Chi,
"Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts",
KDD 2018, section 6.3.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ranker.data.recipes.adult import binary_label, read_comma_space, rows_with_null, to_numbers
from ranker.data.recipes.base import BuiltRanking, Recipe, permutation_split, tabular_data
from ranker.data.sources import SourceFile

SEED = 2021

# Short snake_case names of the 42 columns, in file order (SOURCE.md's list).
COLUMNS: tuple[str, ...] = (
    "age",  # 0
    "class_of_worker",
    "industry_code",
    "occupation_code",
    "education",
    "wage_per_hour",  # 5
    "enrolled_in_edu",
    "marital_stat",
    "major_industry",
    "major_occupation",
    "race",  # 10
    "hispanic_origin",
    "sex",
    "union_member",
    "unemployment_reason",
    "employment_status",  # 15
    "capital_gains",
    "capital_losses",
    "dividends",
    "tax_filer_status",
    "prev_region",  # 20
    "prev_state",
    "household_detail",
    "household_summary",
    "instance_weight",
    "migration_msa",  # 25
    "migration_region",
    "migration_within_region",
    "same_house_1yr_ago",
    "migration_sunbelt",
    "num_persons_worked",  # 30
    "family_under_18",
    "father_birth_country",
    "mother_birth_country",
    "birth_country",
    "citizenship",  # 35
    "self_employed",
    "veterans_questionnaire",
    "veterans_benefits",
    "weeks_worked",
    "year",  # 40
    "income",
)
NUMERICAL: dict[str, str] = {
    "age": "standard",
    "wage_per_hour": "log1p",
    "capital_gains": "log1p",
    "capital_losses": "log1p",
    "dividends": "log1p",
    "num_persons_worked": "standard",
    "weeks_worked": "standard",
}
NOT_FEATURES: tuple[str, ...] = ("marital_stat", "instance_weight", "income")  # cols 7, 24, 41
FEATURES: tuple[str, ...] = tuple(c for c in COLUMNS if c not in NOT_FEATURES)
CATEGORICAL: tuple[str, ...] = tuple(c for c in FEATURES if c not in NUMERICAL)

SOURCES = (
    SourceFile(
        folder="census-income-kdd",
        name="census-income.test",
        sha256="98402b1ab879573d0a7f38a699a40258080e25e33d3401e7bf9c96d3fa0fab8c",
        url="https://raw.githubusercontent.com/drawbridge/keras-mmoe/"
        "2718f56e4313716fd3a86e9510bc2df0cc366238/data/census-income.test.gz",
        gzipped_at_url=True,
    ),
)


def _build(paths: dict[str, Path]) -> BuiltRanking:
    path = paths["census-income.test"]
    raw = read_comma_space(path, COLUMNS)
    raw = to_numbers(raw, list(NUMERICAL), path, pa.int64())
    income = binary_label(raw["income"], "50000+.", "- 50000.", path, "income (column 41)")
    married = raw["marital_stat"]
    never_married = pc.cast(pc.fill_null(pc.equal(married, "Never married"), False), pa.int64())
    table = raw.select(list(FEATURES))
    table = table.append_column("income", income).append_column("never_married", never_married)
    tables = {s: table.take(pa.array(ix)) for s, ix in permutation_split(table.num_rows, SEED).items()}
    labels = ("income", "never_married")
    meta: dict[str, object] = {
        "rows": {s: t.num_rows for s, t in tables.items()},
        "positives": {s: {k: int(pc.sum(t[k]).as_py()) for k in labels} for s, t in tables.items()},
        "positive_rate": {s: {k: float(pc.mean(t[k]).as_py()) for k in labels} for s, t in tables.items()},
        "rows_with_missing": {s: rows_with_null(t, CATEGORICAL) for s, t in tables.items()},
        "split_seed": SEED,
    }
    return BuiltRanking(tables=tables, data=tabular_data(list(FEATURES), NUMERICAL, list(labels)), meta=meta)


RECIPES: list[Recipe] = [
    Recipe(
        name="mt-census",
        protocol="MT-Census",
        kind="ranking",
        summary="Census-Income KDD test file (99,762 rows), tasks income >50K and never married, "
        "7 numerical + 32 categorical features, random 80/10/10 split (seed 2021)",
        sources=SOURCES,
        build=_build,
        aliases=("census",),
    )
]
