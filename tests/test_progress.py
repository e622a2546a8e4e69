"""Progress in a terminal and in a log: tqdm's bar on a TTY, plain lines (every tenth of the epoch
at most every 5 s, at least every 30 s) elsewhere, start/end lines of long phases; no carriage
returns in a file."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from test_engine import Regression, _cfg, _model

from ranker import progress
from ranker.progress import StepProgress, clock_text, phase
from ranker.train.engine import Engine


class Clock:
    """A hand-driven clock: ``clock.t`` seconds."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _steps(bar: StepProgress, clock: Clock, n: int, seconds_each: float, unit: int = 16) -> None:
    for _ in range(n):
        clock.t += seconds_each
        bar.update(lambda: 0.5, {"samples": unit * (bar.step + 1)})


def test_plain_lines_at_tenths_no_more_often_than_every_5_s() -> None:
    out, clock = io.StringIO(), Clock()
    bar = StepProgress("epoch 3", 100, stream=out, clock=clock)
    _steps(bar, clock, 100, 1.0)  # a 100 s epoch: a tenth every 10 s
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0] == "epoch 3: step 10/100 (10%) | loss 0.5000 | 16 samples/s | 0:10 elapsed, ETA 1:30"
    assert lines[-1] == "epoch 3: step 100/100 (100%) | loss 0.5000 | 16 samples/s | 1:40 elapsed"
    assert "\r" not in out.getvalue()


def test_a_short_epoch_writes_no_step_line_and_a_long_one_is_never_silent_30_s() -> None:
    out, clock = io.StringIO(), Clock()
    _steps(StepProgress("epoch 1", 1000, stream=out, clock=clock), clock, 1000, 0.004)  # 4 s
    assert out.getvalue() == ""
    clock.t = 0.0
    bar = StepProgress("epoch 2", 10_000, stream=out, clock=clock)
    _steps(bar, clock, 1000, 0.125)  # 125 s; a tenth takes 1250 s: the 30 s rule writes, then the mark
    stamps = [line.split(" | ")[-1] for line in out.getvalue().splitlines()]
    assert stamps == [
        "0:30 elapsed, ETA 20:20",
        "1:00 elapsed, ETA 19:50",
        "1:30 elapsed, ETA 19:20",
        "2:00 elapsed, ETA 18:50",
        "2:05 elapsed, ETA 18:45",  # step 1000: a tenth, 5 s after the last line
    ]


def test_without_a_total_lines_have_no_share_or_eta() -> None:
    out, clock = io.StringIO(), Clock()
    _steps(StepProgress("epoch 1", None, stream=out, clock=clock), clock, 40, 1.0)
    assert out.getvalue().splitlines() == ["epoch 1: step 30 | loss 0.5000 | 16 samples/s | 0:30 elapsed"]


def test_a_terminal_gets_the_live_bar_and_disabled_progress_writes_nothing() -> None:
    tty, clock = Terminal(), Clock()
    bar = StepProgress("epoch 1", 50, stream=tty, clock=clock)
    _steps(bar, clock, 50, 1.0)
    bar.close()
    assert "\r" in tty.getvalue() and "epoch 1" in tty.getvalue() and " | loss" not in tty.getvalue()
    quiet = io.StringIO()
    _steps(StepProgress("epoch 1", 50, enabled=False, stream=quiet, clock=clock), clock, 50, 10.0)
    assert quiet.getvalue() == ""


def test_phase_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    with phase("reading x.csv", stream=out):
        pass
    assert out.getvalue() == "reading x.csv …\n"  # short: no end line
    monkeypatch.setattr(progress, "MIN_GAP_S", 0.0)
    with phase("evaluating test", stream=out):
        pass
    assert out.getvalue().splitlines()[1:] == ["evaluating test …", "evaluating test: done in 0.0s"]
    with phase("silent", enabled=False, stream=out):
        pass
    assert "silent" not in out.getvalue()
    assert clock_text(3725) == "1:02:05"


def test_the_engine_writes_plain_lines_when_its_output_is_not_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """capsys is not a TTY: step lines (every tenth, the gap rule set to 0 s) and the validation
    line go to stderr, the untrained weights' and each epoch's line to stdout; no bar garbage."""
    monkeypatch.setattr(progress, "MIN_GAP_S", 0.0)
    monkeypatch.setattr("ranker.train.engine.MIN_GAP_S", 0.0)
    model = _model()
    Engine(model, _cfg(epochs=2, progress=True), tmp_path).fit(Regression(model), batches_per_epoch=16)
    out, err = capsys.readouterr()
    assert "\r" not in err and "\x1b" not in err
    steps = [line for line in err.splitlines() if ": step " in line]
    assert len(steps) == 20  # 16 batches: a tenth is passed at 10 of them, in each of 2 epochs
    assert steps[0].startswith("epoch 1: step 2/16 (12%) | loss ") and "samples/s" in steps[0] and "ETA" in steps[0]
    assert steps[9].startswith("epoch 1: step 16/16 (100%)") and "ETA" not in steps[9]
    assert [line for line in err.splitlines() if "validating" in line] == [
        "epoch 1: validating …",
        "epoch 2: validating …",
    ]
    lines = out.splitlines()
    assert lines[0].startswith("before training (untrained weights) | ") and "valid mse" in lines[0]
    assert [line.split(":")[0] for line in lines[1:]] == ["epoch 1", "epoch 2"]


def test_the_engine_progress_stream_is_injectable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = io.StringIO()
    model = _model()
    Engine(model, _cfg(epochs=1, progress=True), tmp_path, stream=Terminal()).fit(Regression(model))
    Engine(_model(), _cfg(epochs=1, progress=False), tmp_path / "quiet", stream=log).fit(Regression(_model()))
    assert log.getvalue() == "" and capsys.readouterr().err == ""
