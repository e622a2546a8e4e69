"""Request bodies of the HTTP API, with their bounds (every violation is a 422 naming the field).

Ids are the caller's raw ids, JSON strings or integers (``7`` and ``"7"`` are the same id).
Unknown keys are refused (a misspelled field is named, never ignored).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

MAX_BATCH = 10_000  # events per POST /events
MAX_HISTORY = 1_000  # events in a request's own history
MAX_ITEMS = 10_000  # candidates of /score, ids of `exclude`
MAX_CONTEXT = 64  # keys of `context`

Id = Annotated[str, StringConstraints(min_length=1, max_length=256)] | int
Value = Annotated[str, StringConstraints(max_length=1024)] | int | float | bool | None
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False, description="unix seconds")]
Context = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], Value], Field(max_length=MAX_CONTEXT)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventIn(Strict):
    """One interaction; ``time`` defaults to the moment the server receives it."""

    user: Id
    item: Id
    action: Id | None = None
    time: Seconds | None = None
    context: Context = {}


class EventsIn(Strict):
    events: Annotated[list[EventIn], Field(min_length=1, max_length=MAX_BATCH)]


class HistoryEvent(Strict):
    item: Id
    action: Id | None = None
    time: Seconds | None = None


class Who(Strict):
    """A user (history read from the store) and/or the history itself (oldest first)."""

    user: Id | None = None
    history: Annotated[list[HistoryEvent | Id], Field(max_length=MAX_HISTORY)] | None = None
    context: Context = {}
    time: Seconds | None = Field(None, description="request time (unix s); default: now")

    @model_validator(mode="after")
    def _someone(self) -> Who:
        if self.user is None and self.history is None:
            raise ValueError("user: give a user or a history (or both)")
        return self


class RecommendIn(Who):
    k: Annotated[int, Field(ge=1, le=MAX_ITEMS)] = 10
    n_candidates: Annotated[int, Field(ge=1, le=MAX_ITEMS)] = 200
    exclude: Annotated[list[Id], Field(max_length=MAX_ITEMS)] = []
    exclude_history: bool = True
    filters: Annotated[
        dict[
            Annotated[str, StringConstraints(min_length=1, max_length=128)],
            Annotated[list[Id | float], Field(min_length=1, max_length=MAX_ITEMS)] | Id | float,
        ],
        Field(max_length=16, description="item column → allowed value(s)"),
    ] = {}


class ScoreIn(Who):
    items: Annotated[list[Id], Field(min_length=1, max_length=MAX_ITEMS)]


class ReloadIn(Strict):
    bundle: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
