"""Tables for a terminal, laid out by rich: plain text (no colour, no markup, no wrapping), so a
line can be searched for, piped and compared."""

from __future__ import annotations

import io
from collections.abc import Collection, Iterable, Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

_WIDE = 100_000
"""The console's width: a row is never wrapped, however long."""


def table(
    rows: Iterable[Sequence[str]],
    *,
    header: Sequence[str] | None = None,
    min_widths: Sequence[int] = (),
    right: Collection[int] = (),
    gap: int = 1,
    indent: int = 0,
) -> list[str]:
    """The lines of ``rows`` laid out in columns ``gap`` spaces apart, each line indented by
    ``indent`` spaces and without trailing spaces. ``min_widths``: the least width of the first
    columns; ``right``: the columns aligned right; ``header``: titles, underlined."""
    rows = [tuple(row) for row in rows]
    columns = len(header) if header is not None else max((len(row) for row in rows), default=0)
    grid = Table(
        box=box.SIMPLE_HEAD if header is not None else None,
        show_header=header is not None,
        show_edge=False,
        pad_edge=False,
        padding=(0, gap, 0, 0),
        collapse_padding=True,
    )
    for number in range(columns):
        grid.add_column(
            Text(header[number]) if header is not None else "",
            justify="right" if number in right else "left",
            min_width=min_widths[number] if number < len(min_widths) else None,
            no_wrap=True,
        )
    for row in rows:
        grid.add_row(*(Text(cell) for cell in row))
    out = io.StringIO()
    Console(file=out, width=_WIDE, color_system=None, highlight=False, emoji=False).print(grid)
    prefix = " " * indent
    return [prefix + line.rstrip() for line in out.getvalue().splitlines()]
