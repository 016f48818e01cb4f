"""Small helpers for the figures' spreadsheets (openpyxl), shared by every figures module."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from openpyxl.styles import Font


def append(ws: Any, values: Sequence[Any]) -> None:
    """A row; text cells stay text, never a formula, whatever a name starts with (=, +, -, @)."""
    ws.append(list(values))
    for cell in ws[ws.max_row]:
        if isinstance(cell.value, str):
            cell.data_type = "s"


def bold(ws: Any, *rows: int) -> None:
    font = Font(bold=True)
    for row in rows:
        for cell in ws[row]:
            cell.font = font


def widths(ws: Any, *columns: int) -> None:
    """The widths of the first columns, A onwards."""
    for i, width in enumerate(columns):
        ws.column_dimensions[chr(ord("A") + i)].width = width


def save(book: Any) -> bytes:
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
