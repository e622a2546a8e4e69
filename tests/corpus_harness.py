"""Runs the malformed-input corpus (tests/corpus/, format in its README.md) through `ranker.cli.main`.

A case is a YAML file: what is wrong (`about`), the files it starts from (`base`, `run`), how it
breaks them (`config`, `files`, `files_hex`, `damage`), the command (`argv`) and what the user must
see (`expect`). Every case must end in a clear outcome: the expected exit status, the words its
one-line message must contain, and never a traceback or an "unexpected" error (exit 1).
"""

from __future__ import annotations

import contextlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CORPUS = Path(__file__).parent / "corpus"
BASES = CORPUS / "_base"


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


def cases() -> list[Path]:
    """Every case file, sorted; files and folders starting with `_` are not cases."""
    found = CORPUS.rglob("*.yaml")
    return sorted(p for p in found if not any(part.startswith("_") for part in p.relative_to(CORPUS).parts))


def case_id(path: Path) -> str:
    return str(path.relative_to(CORPUS).with_suffix(""))


def merge(base: Any, patch: Any) -> Any:
    """Deep merge of a config patch: mappings merge key by key, `null` deletes a key, anything
    else (lists included) replaces."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return patch
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge(merged.get(key), value)
    return merged


def _substitute(value: str, where: dict[str, Path]) -> str:
    for name, path in where.items():
        value = value.replace("{" + name + "}", str(path))
    return value


def _damage(root: Path, op: dict[str, Any]) -> None:
    """One damage operation on a copied run directory (or any file of the case)."""
    kind, arg = next(iter(op.items()))
    if kind == "delete":
        target = root / arg
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    elif kind == "truncate":  # [path, bytes kept]
        path, keep = root / arg[0], int(arg[1])
        path.write_bytes(path.read_bytes()[:keep])
    elif kind == "write":  # [path, text]
        (root / arg[0]).write_text(arg[1])
    elif kind == "write_hex":  # [path, hex bytes]
        (root / arg[0]).write_bytes(bytes.fromhex(arg[1]))
    elif kind == "flip":  # [path, byte offset]: invert one byte (offset may be negative)
        path, at = root / arg[0], int(arg[1])
        data = bytearray(path.read_bytes())
        data[at] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "rename":  # [from, to]
        (root / arg[0]).rename(root / arg[1])
    elif kind == "edit_yaml":  # [path, patch merged as in `config`]
        path = root / arg[0]
        path.write_text(yaml.safe_dump(merge(yaml.safe_load(path.read_text()), arg[1]), sort_keys=False))
    elif kind == "replace":  # [path, old text, new text]
        path = root / arg[0]
        text = path.read_text()
        assert arg[1] in text, f"replace: {arg[1]!r} not in {arg[0]}"
        path.write_text(text.replace(arg[1], arg[2]))
    else:
        raise AssertionError(f"unknown damage operation {kind!r}")


def setup(spec: dict[str, Any], work: Path, trained: dict[str, Path]) -> dict[str, Path]:
    """Lays out the case's files under `work`; returns the placeholders of its argv."""
    case = work / "case"
    case.mkdir(parents=True)
    where = {"case": case}
    if "base" in spec:
        shutil.copytree(BASES / spec["base"], case, dirs_exist_ok=True)
    if "config" in spec:
        path = case / "config.yaml"
        path.write_text(yaml.safe_dump(merge(yaml.safe_load(path.read_text()), spec["config"]), sort_keys=False))
    for name, text in (spec.get("files") or {}).items():
        (case / name).parent.mkdir(parents=True, exist_ok=True)
        (case / name).write_text(text)
    for name, hexed in (spec.get("files_hex") or {}).items():
        (case / name).write_bytes(bytes.fromhex(hexed))
    if "run" in spec:
        run = work / "run"
        shutil.copytree(trained[spec["run"]], run)
        where["run"] = run
    for op in spec.get("damage") or []:
        _damage(work, op)
    return where


def run_case(spec: dict[str, Any], work: Path, trained: dict[str, Path]) -> Outcome:
    """Runs the case's command in-process with `ranker.cli.main` (as `ranker …` would)."""
    from ranker.cli import main

    where = setup(spec, work, trained)
    argv = [_substitute(str(a), where) for a in spec["argv"]]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.chdir(where["case"]):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: usage errors exit 2 with a message
            code = exc.code if isinstance(exc.code, int) else 1
    return Outcome(code, out.getvalue(), err.getvalue())


def check(spec: dict[str, Any], outcome: Outcome) -> list[str]:
    """What is wrong with the outcome (empty when the case behaves as expected)."""
    expect = spec["expect"]
    problems = []
    if outcome.code != expect.get("exit", 2):
        problems.append(f"exit {outcome.code}, expected {expect.get('exit', 2)}")
    if "Traceback" in outcome.err or "unexpected" in outcome.err:
        problems.append("a traceback / unexpected error")
    for word in expect.get("says", []):
        if word.lower() not in outcome.err.lower():
            problems.append(f"stderr lacks {word!r}")
    for word in expect.get("warns", []):
        lines = [line for line in outcome.err.splitlines() if line.startswith("warning:")]
        if not any(word.lower() in line.lower() for line in lines):
            problems.append(f"no warning line containing {word!r}")
    for word in expect.get("prints", []):
        if word.lower() not in outcome.out.lower():
            problems.append(f"stdout lacks {word!r}")
    if expect.get("exit", 2) == 2:
        errors = [line for line in outcome.err.splitlines() if line.startswith("error:")]
        if len(errors) != 1 and "usage:" not in outcome.err:
            problems.append(f"{len(errors)} `error:` lines, expected one")
    return problems


def train_fixture(kind: str, out: Path) -> Path:
    """A finished run of the base config of `kind` (seconds), the source of `run:` cases."""
    from ranker.cli import main

    work = out / f"src-{kind}"
    shutil.copytree(BASES / kind, work)
    run = out / f"run-{kind}"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), contextlib.chdir(work):
        assert main(["train", "config.yaml", "--out", str(run)]) == 0, kind
    return run


class Trained(dict[str, Path]):
    """Trains a base run the first time a case asks for it (most cases need none); ``bundle`` is
    a bundle of the retrieval and ranking base runs."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, kind: str) -> Path:
        self[kind] = bundle_fixture(self, self.root) if kind == "bundle" else train_fixture(kind, self.root)
        return self[kind]


def bundle_fixture(trained: Trained, out: Path) -> Path:
    """`ranker bundle` of the retrieval and ranking base runs (exact search; the two bases do not
    share item ids, so --min-item-overlap 0: a bundle to damage, not to recommend from)."""
    from ranker.cli import main

    bundle = out / "bundle"
    argv = ["bundle", "--retrieval", str(trained["retrieval"]), "--ranker", str(trained["ranking"])]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*argv, "--out", str(bundle), "--index", "exact", "--min-item-overlap", "0"]) == 0
    return bundle
