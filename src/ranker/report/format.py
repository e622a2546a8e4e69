"""Small HTML pieces of the run report: escaped cells, numbers, notes, tables, embedded PNGs."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from html import escape
from typing import Any


def num(value: Any) -> float:
    """``value`` as a float; None, strings and other non-numbers become NaN."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if numeric else math.nan


def fmt(value: Any) -> str:
    """Escaped display text of a scalar: ints as is, floats to 4 significant digits."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, float):
        return escape(str(value))
    return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4g}"


def note(text: str) -> str:
    """A short italic remark (e.g. why a section is missing)."""
    return f'<p class="note">{escape(text)}</p>'


def img(png: bytes, alt: str) -> str:
    """``png`` embedded as a base64 data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """An HTML table; header cells are escaped text, body cells go through :func:`fmt`."""

    def cell(c: Any) -> str:
        numeric = isinstance(c, int | float) and not isinstance(c, bool)
        return f'<td class="num">{fmt(c)}</td>' if numeric else f"<td>{fmt(c)}</td>"

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
