"""The README's Python examples execute and print what their comments say; its YAML validates."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ranker.config import validate

README = (Path(__file__).parent.parent / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_examples_give_the_values_in_their_comments() -> None:
    for block in _blocks("python"):
        namespace: dict[str, object] = {}
        lines = block.splitlines()
        for line in lines:
            code, _, comment = line.partition("#")
            if code.strip() and not code.startswith((" ", "from", "import")) and comment.strip():
                value = eval(code, namespace)  # noqa: S307 (our own README)
                assert abs(value - float(comment.split()[0])) < 1e-9, line
            elif code.strip():
                exec(code, namespace)  # noqa: S102


def test_yaml_quickstart_is_a_valid_config() -> None:
    (block,) = [b for b in _blocks("yaml") if "data:" in b]
    cfg = validate(yaml.safe_load(block))
    assert [f.kind for f in cfg.data.features][-1] == "history"


def test_top_of_readme_has_exactly_the_two_setup_commands() -> None:
    head = README.split("## ")[0]
    commands = _blocks("bash")[:2]
    assert len(re.findall(r"```bash", head)) == 2
    assert commands[0].strip().endswith("ranker demo")
    assert "pytest" in commands[1] and "torch==2.13.0" in commands[1]
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert "pip install -q torch==2.13.0" in ci and "python -m pytest" in ci
