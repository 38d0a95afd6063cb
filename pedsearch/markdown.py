"""Markdown tables for the generated documents (``docs/API.md``, ``docs/RESULTS.md``,
benchmark reports)."""

from __future__ import annotations

from typing import Iterable, Sequence


def cell(text: object) -> str:
    """One table cell: pipes escaped, line breaks folded into spaces."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """``head`` and ``rows`` as Markdown table lines (cells are written as given; pass
    :func:`cell` output where a value may hold a pipe)."""
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


__all__ = ["cell", "table"]
