"""The malformed-input corpus (tests/corpus/): every case ends in the outcome it states — a clear
one-line error with exit 2, or a warning — and none in a traceback or a silent wrong answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from corpus_harness import BASES, Trained, case_id, cases, check, merge, run_case

CASES = cases()


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return Trained(tmp_path_factory.mktemp("corpus-runs"))


@pytest.mark.parametrize("path", CASES, ids=[case_id(p) for p in CASES])
def test_case(path: Path, tmp_path: Path, trained: Trained) -> None:
    spec = yaml.safe_load(path.read_text())
    outcome = run_case(spec, tmp_path, trained)
    problems = check(spec, outcome)
    assert not problems, f"{case_id(path)} ({spec['about']}): {problems}\nstderr: {outcome.err[-2000:]}"


def test_every_case_states_what_is_wrong_and_what_the_user_sees() -> None:
    allowed = {"about", "base", "config", "files", "files_hex", "run", "damage", "argv", "expect"}
    for path in CASES:
        spec = yaml.safe_load(path.read_text())
        assert set(spec) <= allowed, (path, set(spec) - allowed)
        assert spec.get("about") and spec.get("argv") and spec.get("expect"), path
        expect = spec["expect"]
        seen = expect.get("says") or expect.get("warns") or expect.get("prints")
        assert seen, f"{path}: a case must name the words the user sees"


@pytest.mark.parametrize("kind", ["ranking", "retrieval", "generative"])
def test_the_unbroken_bases_train(kind: str, trained: Trained) -> None:
    """The control: each base trains as it is, so a case fails only by what it breaks."""
    assert (trained[kind] / "metrics.json").is_file() and (BASES / kind / "config.yaml").is_file()


def test_merge_deletes_replaces_and_recurses() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 3}
    assert merge(base, {"a": {"c": [3]}, "d": None}) == {"a": {"b": 1, "c": [3]}}
    assert merge(base, {"a": {"b": {"x": 1}}}) == {"a": {"b": {"x": 1}, "c": [1, 2]}, "d": 3}
