"""Config of an event file the user brings (``data.path``) for the sequence families.

Retrieval (``kind: retrieval``) and generative ranking (``kind: generative``) both read one
table of events, one row per (user, item, time[, action]) in any order. The keys shared by the
two families live here; each family's data section adds its own (split kinds, tasks, static
features). Splits are defined on the events in chronological order: per user by ``(time,
row in the file)`` (file order breaks ties, and is the order when there is no time column).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ranker.config.schema import CsvOptions, Fractions, Strict


class LeaveOneOutSplit(Strict):
    """PROTOCOLS.md's leave-one-out: per user, the last event is the test target, the
    second-to-last the validation target, the rest trains. Users with fewer than 3 events
    (after filtering) are dropped."""

    kind: Literal["leave_one_out"] = "leave_one_out"


class EventTimeSplit(Strict):
    """A global time cut into train / valid / test periods.

    Events are ordered globally by (time, row in the file). Either ``valid_start`` and
    ``test_start`` (values of the time column, e.g. unix seconds) put an event in the valid
    period when ``valid_start <= time < test_start`` and in the test period when ``time >=
    test_start``; or ``fractions: [train, valid, test]`` cut the ordered events by count, as
    PROTOCOLS.md's RK-ML100K does: event j (0-based, n events) is train when ``j <
    int(f_train·n)``, valid when ``j < int((f_train + f_valid)·n)``, test otherwise (so events
    of one second can fall on both sides of a cut, file order deciding).
    """

    kind: Literal["time"]
    valid_start: int | None = Field(None, description="first time of the valid period")
    test_start: int | None = Field(None, description="first time of the test period")
    fractions: Fractions | None = Field(None, description="shares of the events (in time order) for train, valid, test")

    @model_validator(mode="after")
    def _one_way(self) -> EventTimeSplit:
        cuts = (self.valid_start, self.test_start)
        if self.fractions is not None:
            if cuts != (None, None):
                raise ValueError("give either fractions or valid_start + test_start, not both")
        elif None in cuts:
            raise ValueError("a time split needs valid_start and test_start (or fractions)")
        elif self.valid_start > self.test_start:  # type: ignore[operator]
            raise ValueError(f"valid_start {self.valid_start} is after test_start {self.test_start}")
        return self


class LastNSplit(Strict):
    """Per user: the last ``test`` events are test, the ``valid`` before them validation."""

    kind: Literal["last_n"]
    valid: int = Field(1, ge=1, description="validation events per user")
    test: int = Field(1, ge=1, description="test events per user")


class EventFile(Strict):
    """Where the events are and which columns mean what (only with ``data.path``).

    Ids (user, item) are read exactly: CSV id columns are read as strings (``007`` stays
    ``007``), parquet id columns must be integer or string columns (never floats), and are
    printed back as given. ``time_column``: integers (unix seconds for HSTU's time bias) or
    timestamps/dates (converted to unix seconds). ``action_column`` + ``keep_actions`` keeps
    only the rows whose action (compared as text) is in the list; + ``min_action`` only the
    rows whose numeric action is at least that (e.g. rating ≥ 4).
    """

    path: str | None = Field(None, description="CSV (optionally .gz) or parquet file of events")
    format: Literal["auto", "csv", "parquet"] = "auto"
    csv: CsvOptions = CsvOptions()
    user_column: str | None = Field(None, description="user id column (required with path)")
    item_column: str | None = Field(None, description="item id column (required with path)")
    time_column: str | None = Field(None, description="event time; without it, file order")
    action_column: str | None = Field(None, description="event type / rating column")
    keep_actions: list[str | int] | None = Field(
        None, description="keep only rows whose action is one of these (needs action_column)"
    )
    min_action: float | None = Field(
        None, description="keep only rows whose numeric action is >= this (needs action_column)"
    )

    def _check_event_keys(self, dataset: str | None) -> None:
        """Exactly one of `dataset` / `path`; the file keys only with `path`."""
        if (dataset is None) == (self.path is None):
            raise ValueError(
                "give exactly one of `dataset` (a built-in recipe) or `path` (your "
                "event file), got " + ("both" if dataset else "neither")
            )
        own = [k for k in EventFile.model_fields if k != "path"]
        if dataset is not None:
            given = [k for k in own if getattr(self, k) != type(self).model_fields[k].default]
            if given:
                raise ValueError(f"{', '.join(given)}: only with `path` (dataset {dataset!r} follows its protocol)")
            return
        missing = [k for k in ("user_column", "item_column") if getattr(self, k) is None]
        if missing:
            raise ValueError(f"with `path`, give {' and '.join(missing)}")
        if self.action_column is None:
            extra = [k for k in ("keep_actions", "min_action") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{extra[0]} needs action_column")
        elif self.keep_actions is not None and self.min_action is not None:
            raise ValueError("give keep_actions or min_action, not both")
