"""Checked ``argparse`` types shared by every ``pedsearch`` sub-command.

A bad value makes argparse print ``argument --flag: <message>`` and exit 2, so each message
names the accepted range and the value given::

    p.add_argument("--top-k", type=bounded(int, 1, 1000))      # "must be 1..1000, got 0"
    p.add_argument("--fps", type=bounded(float, 0, open_low=True))  # "must be > 0, got -1"
    p.add_argument("--port", type=port)                         # "must be 0..65535, got 70000"
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, TypeVar

N = TypeVar("N", int, float)

_KIND_NAMES = {int: "an integer", float: "a number"}


def bounded(kind: type[N], low: N | None = None, high: N | None = None, *,
            open_low: bool = False, unit: str = "") -> Callable[[str], N]:
    """An argparse type: ``kind(text)`` within ``[low, high]`` (``(low, high]`` with
    ``open_low``); ``None`` leaves a side unbounded. Floats must also be finite."""

    def rule() -> str:
        if low is not None and high is not None:
            return f"{low} < value <= {high}" if open_low else f"{low}..{high}"
        if low is not None:
            return f"> {low}" if open_low else f">= {low}"
        return f"<= {high}"

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {_KIND_NAMES.get(kind, kind.__name__)}{unit}") from None
        ok = not isinstance(value, float) or math.isfinite(value)
        if low is not None:
            ok = ok and (value > low if open_low else value >= low)
        if high is not None:
            ok = ok and value <= high
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {rule()}{unit}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


#: a TCP port; 0 lets the system choose a free one
port = bounded(int, 0, 65535)

__all__ = ["bounded", "port"]
