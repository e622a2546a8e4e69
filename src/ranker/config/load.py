"""Load a run config from YAML with ``--set a.b=value`` overrides, failing loudly on any bad key.

Errors name the key path (``model.backbone.hiden``), what was given and what is allowed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar, overload

import yaml
from pydantic import BaseModel, ValidationError

from ranker.config.generative import GenerativeRunConfig
from ranker.config.retrieval import RetrievalRunConfig
from ranker.config.schema import RunConfig
from ranker.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, *, base: dict[str, Any] | None = None
) -> RunConfig:
    """Parse `path` (YAML) or `base`, apply ``key.path=value`` overrides, validate strictly."""
    raw = read_raw(path, overrides, base=base)
    if raw.get("kind") == "ranking":  # the default family may be named explicitly
        raw = {k: v for k, v in raw.items() if k != "kind"}
    return validate(raw, source=str(path) if path else "config")


def load_retrieval_config(path: str | Path, overrides: list[str] | None = None) -> RetrievalRunConfig:
    """Like :func:`load_config`, for a file with ``kind: retrieval`` at the top."""
    raw = read_raw(path, overrides)
    return validate(raw, source=str(path), root=RetrievalRunConfig)


def load_generative_config(path: str | Path, overrides: list[str] | None = None) -> GenerativeRunConfig:
    """Like :func:`load_config`, for a file with ``kind: generative`` at the top."""
    raw = read_raw(path, overrides)
    return validate(raw, source=str(path), root=GenerativeRunConfig)


def anchored(cfg: M, config_path: str | Path) -> M:
    """`cfg` with relative ``data.path`` and the data's other file paths (``user_table``,
    ``negatives_file``, ``item_attributes``) made absolute against the config file's folder (as the feature ranker
    reads paths), so the run directory's config.yaml finds the files from anywhere."""
    folder = Path(config_path).resolve().parent

    def absolute(section: Any) -> Any:
        path = getattr(section, "path", None)
        if path is None or Path(path).expanduser().is_absolute():
            return section
        return section.model_copy(update={"path": str((folder / Path(path).expanduser()).resolve())})

    data = absolute(cfg.data)  # type: ignore[attr-defined]
    parts = {
        k: absolute(getattr(data, k))
        for k in ("user_table", "negatives_file", "item_attributes")
        if getattr(data, k, None)
    }
    return cfg.model_copy(update={"data": data.model_copy(update=parts)})  # type: ignore[attr-defined]


KINDS = ("ranking", "retrieval", "generative")


def config_kind(path: str | Path, overrides: list[str] | None = None) -> str:
    """The file's top-level ``kind`` (after `overrides`): ``ranking`` (the default when absent),
    ``retrieval`` or ``generative``; any other value is a ConfigError naming the allowed ones."""
    kind = read_raw(path, overrides).get("kind", "ranking")
    if kind not in KINDS:
        raise ConfigError(
            f"{path}: kind: unknown kind {kind!r} (the model family); allowed: {', '.join(map(repr, KINDS))}"
        )
    return str(kind)


def read_raw(
    path: str | Path | None, overrides: list[str] | None = None, *, base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The YAML mapping of `path` (or a copy of `base`) with the overrides applied."""
    raw: dict[str, Any] = copy.deepcopy(base) if base is not None else {}
    if path is not None:
        raw = read_yaml_mapping(Path(path))
    for item in overrides or []:
        apply_override(raw, item)
    return raw


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of the YAML file `path`; a ConfigError naming the file (and the line)
    when it is missing, a directory, not UTF-8, not YAML, has a repeated key or is not a mapping."""
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.y*ml"))
        raise ConfigError(
            f"{path}: is a directory, not a config file"
            + (f"; YAML files in it: {', '.join(found)}" if found else " (give the .yaml file)")
        )
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the config as UTF-8"
        ) from None
    try:
        loaded = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {_yaml_problem(exc)}; YAML would silently keep only the last one") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if loaded is None:
        raise ConfigError(f"{path}: the file is empty (expected sections such as data:, model:, train:)")
    if not isinstance(loaded, dict):
        shown = f": {loaded!r}" if len(repr(loaded)) < 60 else ""
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections (data:, model:, train:, ...), "
            f"got a {type(loaded).__name__}{shown}"
        )
    return loaded


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key repeated in one mapping is an error: YAML keeps
    the last value silently, so a second ``train:`` section would drop the first one unseen."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise _DuplicateKey(
                    problem=f"duplicate key {key_node.value!r} (first at line {seen[key] + 1})",
                    problem_mark=key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(yaml.MarkedYAMLError):
    """A key repeated in one mapping (valid YAML, refused by :class:`_UniqueKeyLoader`)."""


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line error as one phrase with 1-based line and column numbers."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return " ".join(str(exc).split())
    mark = exc.problem_mark
    problem = str(exc.problem)
    if "'\\t'" in problem:
        problem = "a tab character (tabs cannot indent YAML; use spaces)"
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    if exc.context and exc.context_mark is not None:
        text += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return text


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in the nested dict `raw`; the value is parsed as YAML (``[1,2]``, ``true``)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: empty key in {key.strip()!r}; expected KEY.PATH=VALUE")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value {text!r} is not valid YAML: {_yaml_problem(exc)}") from None
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, parts[: i + 1])
            continue
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict | list):
            raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a section")
        node = nxt
    if isinstance(node, list):
        idx = int(parts[-1]) if parts[-1].isdigit() else None
        if idx is None or idx >= len(node):
            raise ConfigError(f"--set {key}: {parts[-1]!r} is not an index of that list")
        node[idx] = value
    else:
        node[parts[-1]] = value


def _list_item(node: list[Any], part: str, path: list[str]) -> Any:
    if part.isdigit() and int(part) < len(node):
        return node[int(part)]
    for entry in node:  # address list entries by their `name` (features, tasks)
        if isinstance(entry, dict) and entry.get("name") == part:
            return entry
    raise ConfigError(f"--set: {'.'.join(path)} names no entry of that list (index or name)")


@overload
def validate(raw: dict[str, Any], *, source: str = ...) -> RunConfig: ...
@overload
def validate(raw: dict[str, Any], *, source: str = ..., root: type[M]) -> M: ...
def validate(raw: dict[str, Any], *, source: str = "config", root: type[BaseModel] = RunConfig) -> Any:
    """Validate `raw` as a `root` model, turning pydantic's errors into one clear message."""
    try:
        return root.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, source, root)) from None


def format_errors(exc: ValidationError, source: str, root: type[BaseModel] = RunConfig) -> str:
    """One line per problem: the key path, the problem, and the allowed keys or values."""
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        shown, _ = _walk(loc, root)  # the user's key path: union tags (`mlp`, `categorical`) left out
        path = ".".join(shown)
        msg = err["msg"]
        given = err.get("input")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1], root)
            msg = f"unknown key; allowed: {', '.join(allowed)}" if allowed else "unknown key"
        elif err["type"] == "literal_error" and err.get("ctx"):
            msg = f"got {given!r}; allowed: {err['ctx'].get('expected')}"
        elif err["type"] == "union_tag_invalid" and err.get("ctx"):
            msg = f"unknown kind {err['ctx'].get('tag')!r}; allowed: {err['ctx'].get('expected_tags')}"
        elif err["type"] == "union_tag_not_found":
            kinds = [k for k in map(_kind_of, _walk(loc, root)[1]) if k]
            msg = "missing `kind`" + (f"; allowed: {', '.join(map(repr, kinds))}" if kinds else "")
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif err["type"] == "missing" and loc and loc[-1].isdigit():  # a tuple given too few values
            path = ".".join(shown[:-1])
            msg = f"too few values: nothing at index {loc[-1]} (got {given!r})"
        elif err["type"] == "missing":
            msg = "required key missing"
        elif err["type"] in ("model_type", "model_attributes_type", "dict_type") and given is None:
            msg = "nothing under it: give its keys, or delete the line for the defaults"
        elif err["type"] in ("model_type", "model_attributes_type", "dict_type"):
            msg = f"expected a mapping of keys (got {given!r})"
        elif err["type"] != "missing" and isinstance(given, str | int | float | bool | list | dict):
            msg = f"{msg} (got {given!r})"
        lines.append(f"  {path}: {msg}" if path else f"  {msg}")
    return "\n".join(lines)


def _walk(loc: list[str], root: type[BaseModel]) -> tuple[list[str], list[type[BaseModel]]]:
    """Follow `loc` through the config models: (the path without union tags, models found there).

    The models list is empty once `loc` leaves the schema (an unknown key).
    """
    models: list[type[BaseModel]] = [root]
    shown: list[str] = []
    for part in loc:
        if part.isdigit() or not models:
            shown.append(part)
            continue
        with_field = [m for m in models if part in m.model_fields]
        if with_field:
            shown.append(part)
            models = _models_in(with_field[0].model_fields[part].annotation)
            continue
        tagged = [m for m in models if _kind_of(m) == part]  # union tag in the error path
        if tagged:
            models = tagged
        else:
            shown.append(part)
            models = []
    return shown, models


def _allowed_keys(loc: list[str], root: type[BaseModel]) -> list[str]:
    """Field names of the config model found at `loc` (through lists, options and unions)."""
    models = _walk(loc, root)[1]
    return sorted(models[0].model_fields) if len(models) == 1 else []


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (unwrapping list, Optional, Annotated, Union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        out.extend(_models_in(arg))
    return out


def _kind_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("kind")
    args = getattr(field.annotation, "__args__", ()) if field is not None else ()
    return str(args[0]) if args else None


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML (every default made explicit)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
