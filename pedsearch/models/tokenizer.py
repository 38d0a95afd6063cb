"""The word vocabulary of the Bi-LSTM text tower (SSAN Sec. III-A: "we count the unique words to
build a vocabulary in the training set").

Tokens are lower-cased runs of letters and digits; apostrophes are dropped (``woman's`` ->
``womans``) and every other punctuation mark splits words, as in CUHK-PEDES'
``processed_tokens``. With ``punctuation="keep"`` each mark is a token of its own. Index 0 is
``<pad>``, 1 is ``<unk>``; the rest are sorted by count, then alphabetically, so a vocabulary
built twice from the same captions is identical. It serialises to JSON (``vocab.json`` of a
model bundle).

Example:
    >>> v = Vocab.build(["A man in a red coat.", "A woman, red bag"], min_count=1)
    >>> v.tokenize("A man's RED coat!")
    ['a', 'mans', 'red', 'coat']
    >>> v.encode("a red hat")[:2] == [v.index("a"), v.index("red")]
    True
"""

from __future__ import annotations

import collections
import json
import pathlib
from typing import Any, Iterable, Literal, Sequence

import torch

from pedsearch.errors import InvalidInput
from pedsearch.words import tokens

PAD = "<pad>"
UNK = "<unk>"
PAD_ID = 0
UNK_ID = 1
VOCAB_FORMAT = 1


class Vocab:
    """Word <-> index table with the tokenizer that produced it.

    Args:
        words: every entry in index order; must start with ``<pad>``, ``<unk>``.
        punctuation: ``"drop"`` (marks only split words) or ``"keep"`` (marks are tokens).
        max_length: longest token sequence :meth:`encode_batch` returns; longer texts are cut.
    """

    def __init__(
        self,
        words: Sequence[str],
        *,
        punctuation: Literal["drop", "keep"] = "drop",
        max_length: int = 96,
    ) -> None:
        words = list(words)
        if words[:2] != [PAD, UNK]:
            raise InvalidInput(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {words[:2]}")
        if len(set(words)) != len(words):
            raise InvalidInput("a vocabulary lists a word twice")
        if punctuation not in ("drop", "keep"):
            raise InvalidInput(f"punctuation must be 'drop' or 'keep', not {punctuation!r}")
        if max_length < 1:
            raise InvalidInput(f"max_length must be >= 1, not {max_length}")
        self.words = words
        self.punctuation = punctuation
        self.max_length = int(max_length)
        self._index = {w: i for i, w in enumerate(words)}

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        captions: Iterable[str],
        *,
        min_count: int = 1,
        max_size: int | None = None,
        punctuation: Literal["drop", "keep"] = "drop",
        max_length: int = 96,
    ) -> "Vocab":
        """Count the tokens of ``captions`` and keep those seen ``min_count`` times or more
        (at most ``max_size`` entries including ``<pad>`` and ``<unk>``)."""
        if min_count < 1:
            raise InvalidInput(f"min_count must be >= 1, not {min_count}")
        probe = cls([PAD, UNK], punctuation=punctuation, max_length=max_length)
        counts: collections.Counter[str] = collections.Counter()
        for caption in captions:
            counts.update(probe.tokenize(caption))
        kept = sorted(
            (w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w)
        )
        if max_size is not None:
            kept = kept[: max(0, max_size - 2)]
        return cls([PAD, UNK, *kept], punctuation=punctuation, max_length=max_length)

    # -- tokens ----------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise InvalidInput(f"text must be a string, got {type(text).__name__}")
        return tokens(text, punctuation=self.punctuation)

    def index(self, word: str) -> int:
        return self._index.get(word, UNK_ID)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (unknown words -> ``<unk>``), not truncated."""
        return [self._index.get(w, UNK_ID) for w in self.tokenize(text)]

    def encode_batch(
        self, texts: Sequence[str], *, max_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> padded ids and lengths.

        Returns:
            ``token_ids (B, L)`` int64 padded with 0, ``L`` the longest kept length, and
            ``lengths (B,)`` int64, each in ``1..max_length``.

        Raises:
            InvalidInput: a text is not a string or has no word; the message names its index.
        """
        limit = max_length or self.max_length
        encoded = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInput(f"text {i} must be a string, got {type(text).__name__}")
            ids = self.encode(text)[:limit]
            if not ids:
                raise InvalidInput(f"text {i} ({text[:40]!r}) has no words to search for")
            encoded.append(ids)
        longest = max((len(ids) for ids in encoded), default=1)
        token_ids = torch.zeros(len(encoded), longest, dtype=torch.long)
        for i, ids in enumerate(encoded):
            token_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        lengths = torch.tensor([len(ids) for ids in encoded], dtype=torch.long)
        return token_ids, lengths

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.words[i] for i in ids if i != PAD_ID]

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.to_dict() == other.to_dict()

    @property
    def options(self) -> dict[str, Any]:
        """The tokenizer options: ``Vocab(words, **vocab.options)`` rebuilds it."""
        return {"punctuation": self.punctuation, "max_length": self.max_length}

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": VOCAB_FORMAT,
            "punctuation": self.punctuation,
            "max_length": self.max_length,
            "words": list(self.words),
        }

    @classmethod
    def from_dict(cls, data: Any) -> "Vocab":
        """Raises:
        InvalidInput: ``data`` is not a vocabulary of a format this version reads."""
        if not isinstance(data, dict) or not isinstance(data.get("words"), list):
            raise InvalidInput("not a pedsearch vocabulary (no 'words' list)")
        if data.get("format") != VOCAB_FORMAT:
            raise InvalidInput(f"vocabulary format {data.get('format')!r} is not {VOCAB_FORMAT}")
        if not all(isinstance(w, str) for w in data["words"]):
            raise InvalidInput("vocabulary words must be strings")
        return cls(
            data["words"],
            punctuation=data.get("punctuation", "drop"),
            max_length=int(data.get("max_length", 96)),
        )

    def save(self, path: str | pathlib.Path) -> pathlib.Path:
        path = pathlib.Path(path)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False))
        return path

    @classmethod
    def load(cls, path: str | pathlib.Path) -> "Vocab":
        """Raises:
        InvalidInput: the file is missing, not JSON, or not a vocabulary (names the file)."""
        path = pathlib.Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read vocabulary {path}: {exc}") from exc
        except InvalidInput as exc:
            raise InvalidInput(f"{path}: {exc.message}") from exc
