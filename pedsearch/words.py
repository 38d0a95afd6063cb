"""What the text towers read of a text: lower-cased runs of letters and digits, apostrophes
dropped (``woman's`` -> ``womans``), every other mark splitting words or, kept, a token of its
own. Without torch, so data loaders check captions by the very rule the tokenizer applies.

Example:
    >>> tokens("A man's RED coat!")
    ['a', 'mans', 'red', 'coat']
"""

from __future__ import annotations

import re
from typing import Literal

_APOSTROPHES = re.compile(r"['\u2019\u2018`]")
_WORDS = re.compile(r"[a-z0-9]+")
_WORDS_AND_MARKS = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def tokens(text: str, *, punctuation: Literal["drop", "keep"] = "drop") -> list[str]:
    """The tokens of ``text``: its words, and with ``punctuation="keep"`` its marks too."""
    text = _APOSTROPHES.sub("", text.lower())
    return (_WORDS if punctuation == "drop" else _WORDS_AND_MARKS).findall(text)


__all__ = ["tokens"]
