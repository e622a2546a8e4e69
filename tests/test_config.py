"""Strict config loading: key-path error messages, ``--set`` overrides, defaults, round trip."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from ranker.config import apply_override, dump_config, load_config
from ranker.config.load import read_raw
from ranker.config.schema import FilesSplit, MeanPoolHistory, MLPBackbone, RandomSplit
from ranker.errors import ConfigError

BASE: dict[str, Any] = {
    "name": "t",
    "data": {
        "path": "rows.csv",
        "features": [
            {"kind": "categorical", "name": "user_id"},
            {"kind": "numerical", "name": "price"},
            {"kind": "multi_categorical", "name": "genres"},
        ],
        "tasks": [{"name": "click"}],
        "split": {"kind": "random"},
    },
}


def base() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def config_error(raw: dict[str, Any] | None = None, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(base=raw if raw is not None else base(), overrides=overrides)
    return str(info.value)


def problem_line(message: str, path: str) -> str:
    """The message line about `path` (exactly one)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip().startswith(path + ":")]
    assert len(lines) == 1, message
    return lines[0]


# ---------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("override", "path", "allowed"),
    [
        ("modle.x=1", "modle", ["data", "model", "name", "train"]),
        ("train.epocs=3", "train.epocs", ["epochs", "batch_size", "lr", "optimizer"]),
        ("model.backbone.hiden=[64]", "model.backbone.hiden", ["activation", "dropout", "hidden", "kind", "norm"]),
        ("model.encoders.categorical.dimm=8", "model.encoders.categorical.dimm", ["dim", "kind"]),
        ("model.history.action_dimm=4", "model.history.action_dimm", ["action_dim", "kind"]),
        ("data.csv.delim=;", "data.csv.delim", ["column_names", "delimiter", "header"]),
        ("data.split.sed=3", "data.split.sed", ["fractions", "kind", "seed"]),
        (
            "data.features.user_id.colum=uid",
            "data.features.0.colum",
            ["column", "kind", "min_count", "name", "vocab_from"],
        ),
        ("data.features.genres.max_length=3", "data.features.2.max_length", ["max_len", "separator"]),
        ("data.tasks.click.wieght=2", "data.tasks.0.wieght", ["mask_column", "weight"]),
    ],
)
def test_unknown_key_names_full_path_and_allowed_keys(override: str, path: str, allowed: list[str]) -> None:
    msg = config_error(overrides=[override])
    line = problem_line(msg, path)
    assert "unknown key" in line
    for key in allowed:
        assert key in line.split("allowed:", 1)[1], line
    # the union tag (`mlp`, `categorical`, `random`) is not part of the user's key path
    assert ".mlp." not in msg and ".categorical." not in msg.replace("encoders.categorical", "")
    assert ".random." not in msg


def test_misspelled_hidden_suggests_hidden() -> None:
    msg = config_error(overrides=["model.backbone.hiden=[64,32]"])
    assert "model.backbone.hiden" in msg
    assert "hidden" in problem_line(msg, "model.backbone.hiden").split("allowed:", 1)[1]


def test_unknown_key_in_yaml_file_names_the_file(tmp_path: Path) -> None:
    raw = base()
    raw["train"] = {"epochs": 2, "learning_rate": 0.1}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(str(path))
    assert "train.learning_rate: unknown key" in msg
    assert "lr" in msg


# ---------------------------------------------------------------------- wrong types / values


def test_wrong_type_names_path_and_value() -> None:
    msg = config_error(overrides=["train.lr=abc"])
    line = problem_line(msg, "train.lr")
    assert "number" in line
    assert "'abc'" in line


def test_wrong_type_of_int_field() -> None:
    line = problem_line(config_error(overrides=["train.epochs=many"]), "train.epochs")
    assert "integer" in line and "'many'" in line


def test_out_of_range_value() -> None:
    line = problem_line(config_error(overrides=["train.batch_size=0"]), "train.batch_size")
    assert "greater than or equal to 1" in line


def test_unknown_literal_lists_allowed_values() -> None:
    line = problem_line(config_error(overrides=["train.optimizer=sgd"]), "train.optimizer")
    assert "'sgd'" in line
    assert "'adamw'" in line and "'adam'" in line


def test_unknown_literal_inside_a_feature() -> None:
    line = problem_line(config_error(overrides=["data.features.price.transform=cube"]), "data.features.1.transform")
    assert "'cube'" in line and "'standard'" in line and "'log1p'" in line


def test_unknown_feature_kind_lists_the_kinds() -> None:
    raw = base()
    raw["data"]["features"].append({"kind": "geo", "name": "where"})
    line = problem_line(config_error(raw), "data.features.3")
    assert "'geo'" in line
    for kind in ("categorical", "multi_categorical", "numerical", "dense", "history"):
        assert kind in line


def test_feature_without_kind_lists_the_kinds() -> None:
    raw = base()
    raw["data"]["features"].append({"name": "where"})
    line = problem_line(config_error(raw), "data.features.3")
    assert "kind" in line
    for kind in ("categorical", "numerical", "history"):
        assert kind in line


def test_unknown_split_kind() -> None:
    line = problem_line(config_error(overrides=["data.split.kind=kfold"]), "data.split")
    assert "'kfold'" in line and "'random'" in line and "'time'" in line and "'files'" in line


def test_renamed_numerical_kind_ple_says_piecewise_linear(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({**base(), "model": {"encoders": {"numerical": {"kind": "ple", "n_bins": 8}}}}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    line = problem_line(str(info.value), "model.encoders.numerical")
    assert line == (
        "model.encoders.numerical: kind 'ple' was renamed to 'piecewise_linear' "
        "(`ple` now only names the multi-task heads, model.heads.kind)"
    )
    assert len(str(info.value).splitlines()) == 2  # the header and this one problem
    cfg = load_config(path, ["model.encoders.numerical.kind=piecewise_linear"])
    assert cfg.model.encoders.numerical.kind == "piecewise_linear"
    assert load_config(base={**base(), "model": {"heads": {"kind": "ple"}}}).model.heads.kind == "ple"


# ---------------------------------------------------------------------- consistency


@pytest.mark.parametrize("missing", ["features", "tasks", "split"])
def test_own_data_needs_features_tasks_split(missing: str) -> None:
    raw = base()
    del raw["data"][missing]
    line = problem_line(config_error(raw), "data")
    assert missing in line
    assert "dataset" in line


def test_own_data_needs_path_unless_files_split() -> None:
    raw = base()
    del raw["data"]["path"]
    assert "path" in problem_line(config_error(raw), "data")
    raw["data"]["split"] = {"kind": "files", "train": "a.csv", "valid": "b.csv", "test": "c.csv"}
    cfg = load_config(base=raw)
    assert isinstance(cfg.data.split, FilesSplit) and cfg.data.split.valid == "b.csv"


def test_duplicate_feature_names() -> None:
    raw = base()
    raw["data"]["features"].append({"kind": "numerical", "name": "user_id"})
    line = problem_line(config_error(raw), "data")
    assert "duplicate feature names" in line and "user_id" in line


def test_random_split_fractions_must_sum_to_one() -> None:
    line = problem_line(config_error(overrides=["data.split.fractions=[0.5,0.2,0.2]"]), "data.split.fractions")
    assert "sum to 1" in line and "0.5" in line
    # and a valid one is accepted
    cfg = load_config(base=base(), overrides=["data.split.fractions=[0.6,0.2,0.2]"])
    assert isinstance(cfg.data.split, RandomSplit)
    assert cfg.data.split.fractions == (0.6, 0.2, 0.2)


def test_negative_fraction_rejected() -> None:
    msg = config_error(overrides=["data.split.fractions=[1.2,-0.1,-0.1]"])
    assert "sum to 1" in problem_line(msg, "data.split.fractions")


def test_time_split_needs_its_column() -> None:
    line = problem_line(config_error(overrides=["data.split.kind=time"]), "data.split.column")
    assert "required" in line.lower()


def test_config_file_not_found_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


# ---------------------------------------------------------------------- --set overrides


def test_override_nested_key_creates_sections() -> None:
    cfg = load_config(base=base(), overrides=["model.backbone.dropout=0.3", "train.lr=0.01"])
    assert cfg.model.backbone.dropout == 0.3
    assert cfg.train.lr == 0.01
    assert cfg.model.backbone.hidden == [256, 128]  # untouched default


def test_override_yaml_list_value() -> None:
    cfg = load_config(base=base(), overrides=["model.backbone.hidden=[64,32]"])
    assert cfg.model.backbone.hidden == [64, 32]


@pytest.mark.parametrize(("text", "value"), [("false", False), ("true", True), ("no", False)])
def test_override_bool(text: str, value: bool) -> None:
    cfg = load_config(base=base(), overrides=[f"train.progress={text}"])
    assert cfg.train.progress is value


def test_override_addresses_feature_by_name_and_index() -> None:
    cfg = load_config(
        base=base(),
        overrides=["data.features.price.transform=log1p", "data.features.0.min_count=3", "data.tasks.click.weight=0.5"],
    )
    price = next(f for f in cfg.data.features if f.name == "price")
    assert price.transform == "log1p"
    assert cfg.data.features[0].min_count == 3
    assert cfg.data.tasks[0].weight == 0.5


def test_override_does_not_touch_the_base_dict() -> None:
    raw = base()
    load_config(base=raw, overrides=["data.features.price.transform=log1p"])
    assert raw == BASE


def test_override_later_wins() -> None:
    cfg = load_config(base=base(), overrides=["train.epochs=3", "train.epochs=5"])
    assert cfg.train.epochs == 5


def test_override_replaces_a_list_item_by_index() -> None:
    cfg = load_config(base=base(), overrides=["model.backbone.hidden=[1,2,3]", "model.backbone.hidden.1=7"])
    assert cfg.model.backbone.hidden == [1, 7, 3]


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("train.lr", "expected KEY.PATH=VALUE"),
        ("data.features.nope.transform=log1p", "data.features.nope"),
        ("data.features.9.transform=log1p", "data.features.9"),
        ("model.backbone.hidden.5=1", "'5'"),
        ("name.x=1", "name is not a section"),
        ("train.lr=[1,", "not valid YAML"),
    ],
)
def test_bad_override_syntax(item: str, fragment: str) -> None:
    raw = base()
    raw["model"] = {"backbone": {"hidden": [8, 4]}}
    with pytest.raises(ConfigError) as info:
        load_config(base=raw, overrides=[item])
    assert fragment in str(info.value)


def test_apply_override_in_place() -> None:
    raw: dict[str, Any] = {"a": {"b": 1}}
    apply_override(raw, "a.c.d=[1, 2]")
    apply_override(raw, "a.b=x=y")  # only the first '=' separates key and value
    assert raw == {"a": {"b": "x=y", "c": {"d": [1, 2]}}}


# ---------------------------------------------------------------------- defaults / round trip


def test_omitted_kind_of_model_parts_takes_the_default() -> None:
    raw = base()
    raw["model"] = {"backbone": {"hidden": [32]}, "history": {"action_dim": 4}, "encoders": {"categorical": {"dim": 5}}}
    cfg = load_config(base=raw)
    assert isinstance(cfg.model.backbone, MLPBackbone)
    assert cfg.model.backbone.kind == "mlp" and cfg.model.backbone.hidden == [32]
    assert isinstance(cfg.model.history, MeanPoolHistory) and cfg.model.history.action_dim == 4
    assert cfg.model.encoders.categorical.kind == "embedding"
    assert cfg.model.encoders.categorical.dim == 5
    assert cfg.model.interaction.kind == "concat" and cfg.model.heads.kind == "linear"


def test_history_kind_none() -> None:
    cfg = load_config(base=base(), overrides=["model.history.kind=none"])
    assert cfg.model.history.kind == "none"


def test_dump_load_round_trip(tmp_path: Path) -> None:
    raw = base()
    raw["data"]["features"].append(
        {
            "kind": "history",
            "name": "hist",
            "item_column": "h_items",
            "item_feature": "user_id",
            "time_column": "h_secs",
            "max_len": 7,
        }
    )
    raw["data"]["features"].append({"kind": "dense", "name": "emb", "dim": 3})
    raw["data"]["split"] = {"kind": "time", "column": "ts", "fractions": [0.7, 0.2, 0.1]}
    cfg = load_config(base=raw, overrides=["model.backbone.hidden=[16]", "train.progress=false"])
    text = dump_config(cfg)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    again = load_config(path)
    assert again == cfg
    assert dump_config(again) == text
    # every default is explicit in the dump
    dumped = yaml.safe_load(text)
    assert dumped["train"]["optimizer"] == "adamw"
    assert dumped["model"]["backbone"]["kind"] == "mlp"
    assert dumped["data"]["features"][0]["min_count"] == 1


def test_config_is_frozen() -> None:
    cfg = load_config(base=base())
    with pytest.raises(ValidationError, match="frozen"):
        cfg.train.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("model.backbone.hidden=[64,0]", r"model\.backbone\.hidden\.1"),
        ("model.backbone.hidden=[-8]", r"model\.backbone\.hidden\.0"),
        ("data.csv.delimiter=''", r"data\.csv\.delimiter"),
        ("data.csv.delimiter=ab", r"data\.csv\.delimiter"),
    ],
)
def test_widths_and_delimiter_are_checked(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(base=base(), overrides=[override])


def test_a_label_column_may_not_be_a_feature() -> None:
    raw = base()
    raw["data"]["features"].append({"kind": "numerical", "name": "clicked_copy", "column": "click"})
    raw["data"]["tasks"] = [{"name": "ctr", "column": "click"}]
    with pytest.raises(ConfigError, match=r"label column 'click' of task 'ctr' is also the feature 'clicked_copy'"):
        load_config(base=raw)


def test_a_repeated_key_is_refused_with_both_lines_but_merge_keys_work(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: a\ntrain: {epochs: 1}\nname: b\n")
    with pytest.raises(ConfigError, match=r"c.yaml: line 3, column 1: duplicate key 'name' \(first at line 1\)"):
        read_raw(path)
    path.write_text("base: &b {epochs: 1, lr: 0.1}\ntrain:\n  <<: *b\n  lr: 0.2\n")
    assert read_raw(path)["train"] == {"epochs": 1, "lr": 0.2}  # an override of a merged key is no repeat


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (b"", "the file is empty"),
        (b"- a\n- b\n", "got a list"),
        (b"name: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 9)"),
        (b"a:\n\tb: 1\n", "line 2, column 1: a tab character"),
    ],
)
def test_unreadable_config_files_are_one_line_naming_the_file(tmp_path: Path, text: bytes, fragment: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError) as info:
        read_raw(path)
    assert str(info.value).startswith(str(path)) and fragment in str(info.value) and "\n" not in str(info.value)
