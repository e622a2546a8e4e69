"""The three model families and where each keeps its train / evaluate / load.

A config file's top-level ``kind`` (absent: ``ranking``) and a run directory's saved
``config.yaml`` name the family; the CLI looks the family up here and calls its functions, so a
command never branches on the kind itself. Modules are imported on first use, keeping
``ranker --help`` fast.

=============  ================================  ==========================================
kind           run module                        what it trains
=============  ================================  ==========================================
ranking        :mod:`ranker.ranking.run`         feature ranker (embeddings, DCN-V2, heads)
retrieval      :mod:`ranker.retrieval.run`       sequential candidate generator (SASRec, HSTU)
generative     :mod:`ranker.generative.run`      generative HSTU ranker over item/action tokens
=============  ================================  ==========================================
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ranker.config.load import config_kind
from ranker.errors import ConfigError, DataError


@dataclass(frozen=True)
class Family:
    """One family's entry points, by module and function name."""

    kind: str
    module: str
    config_loader: str
    train_fn: str
    fine_tunes: bool = False

    def _fn(self, module: str, name: str) -> Callable[..., Any]:
        fn: Callable[..., Any] = getattr(importlib.import_module(module), name)
        return fn

    def load_config(self, path: Path, overrides: list[str] | None = None) -> Any:
        """The validated config of `path` (with ``--set`` overrides)."""
        return self._fn("ranker.config", self.config_loader)(path, overrides)

    def train(self, cfg: Any, run_dir: Path, **options: Any) -> dict[str, Any]:
        """Train `cfg` into `run_dir` (resuming a checkpoint there); the metrics written."""
        return self._fn(self.module, self.train_fn)(cfg, run_dir, **options)

    def evaluate(self, run_dir: Path, split: str = "test") -> dict[str, Any]:
        """Re-score a finished run's selected weights on `split` (the family checks the name)."""
        return self._fn(self.module, "evaluate_run")(run_dir, split)

    def load(self, run_dir: Path) -> Any:
        """A finished run as the family's ``load_run`` returns it (config, model in eval mode, …),
        verified against its manifest."""
        return self._fn(self.module, "load_run")(run_dir)


FAMILIES: dict[str, Family] = {
    "ranking": Family("ranking", "ranker.ranking.run", "load_config", "train_run", fine_tunes=True),
    "retrieval": Family("retrieval", "ranker.retrieval.run", "load_retrieval_config", "train_retrieval_run"),
    "generative": Family("generative", "ranker.generative.run", "load_generative_config", "train_generative_run"),
}


def family_of_config(path: Path, overrides: list[str] | None = None) -> Family:
    """The family a config file declares with its top-level ``kind`` (after ``--set`` overrides)."""
    return FAMILIES[config_kind(path, overrides)]


def family_of_run(run_dir: Path, flag: str = "") -> Family:
    """The family of a finished run directory, from the ``config.yaml`` it saved, read only once the
    directory is verified against its manifest (:func:`ranker.run_manifest.verify_run`: a damaged or
    unfinished run is refused naming the file); `flag` (``--teacher``) names the argument in the error
    when the path is no run directory."""
    where = f"{flag} {run_dir}".strip()
    if not Path(run_dir).exists():
        raise ConfigError(f"{where}: no such run directory")
    if not Path(run_dir).is_dir():
        raise ConfigError(f"{where}: is a file, not a run directory (give the folder `ranker train --out` wrote)")
    from ranker.run_manifest import verify_run

    try:
        verify_run(Path(run_dir))
    except DataError as exc:
        if not flag:
            raise
        raise DataError(f"{flag} {exc}") from None
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{where}: not a run directory (no config.yaml)")
    return family_of_config(path)


def require_family(run_dir: Path, kind: str, flag: str, command: str) -> Family:
    """The family of `run_dir`, which `command` needs to be `kind` (a ConfigError naming both)."""
    family = family_of_run(run_dir, flag)
    if family.kind != kind:
        raise ConfigError(f"{flag} {run_dir}: a {family.kind} run; {command} needs a {kind} run".lstrip())
    return family
