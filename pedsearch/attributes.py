"""The canonical attribute schema (``attribute_schema.yaml``) and its flat vector layout.

Every model output, Milvus scalar field and query speaks this schema. A sample's attributes are a
flat vector of ``dim`` probabilities, family after family, value after value; ``single``
families hold one softmax group, ``multi`` families independent sigmoids.

Example:
    >>> s = AttributeSchema.default()
    >>> s.index("upper_color", "red") < s.dim
    True
    >>> s.field_name("backpack", "yes")
    'attr_backpack_yes'
"""

from __future__ import annotations

import functools
import pathlib
import re
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import numpy as np
import yaml

from pedsearch.errors import ConfigError, InvalidInput

SCHEMA_FILE = pathlib.Path(__file__).with_name("attribute_schema.yaml")
#: weight of CMAAM's attribute similarity beside the latent one for text queries (Eq. 19 adds
#: the two: weight 1); :func:`latent_attribute_score`
DEFAULT_TEXT_ATTRIBUTE_WEIGHT = 1.0
_NAME = re.compile(r"\A[a-z][a-z0-9_]*\Z")


@dataclass(frozen=True)
class Family:
    name: str
    kind: Literal["single", "multi"]
    values: tuple[str, ...]
    offset: int  # first index of this family in the flat vector

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + len(self.values))

    @property
    def is_binary(self) -> bool:
        return self.kind == "single" and self.values == ("no", "yes")


class AttributeSchema:
    """Families of attribute values laid out as one flat vector.

    Args:
        families: mapping family name -> {"kind": "single"|"multi", "values": [...]}.
        synonyms: mapping canonical value -> words a user may type for it.
    """

    def __init__(
        self,
        families: Mapping[str, Mapping[str, Any]],
        synonyms: Mapping[str, list[str]] | None = None,
        version: int = 1,
    ) -> None:
        self.version = version
        fams: list[Family] = []
        offset = 0
        for name, spec in families.items():
            kind = spec.get("kind")
            values = tuple(str(v) for v in spec.get("values", ()))
            if not _NAME.match(name) or kind not in ("single", "multi") or len(values) < 2:
                raise ConfigError(f"attribute family {name!r} is malformed: {dict(spec)}")
            if len(set(values)) != len(values) or not all(_NAME.match(v) for v in values):
                raise ConfigError(f"attribute family {name!r} has bad or repeated values")
            fams.append(Family(name, kind, values, offset))
            offset += len(values)
        self.families: tuple[Family, ...] = tuple(fams)
        self._by_name = {f.name: f for f in fams}
        self.dim = offset
        self.synonyms = {k: [w.lower() for w in v] for k, v in (synonyms or {}).items()}
        self._alias = {w: k for k, words in self.synonyms.items() for w in words}
        # built once: every search hit maps its 48+ Milvus fields to these names
        self._field_labels = dict(zip(self.field_names(), self.names()))
        # attribute_space in a few whole-array operations (every indexed row goes through it,
        # pedsearch.schema.VectorLayout): which values are multi, and the (dim, dim) matrix that
        # averages each single family's log-probabilities over the family
        self._multi = np.zeros(self.dim, bool)
        self._single_mean = np.zeros((self.dim, self.dim))
        for f in self.families:
            if f.kind == "multi":
                self._multi[f.slice] = True
            else:
                self._single_mean[f.slice, f.slice] = 1.0 / len(f.values)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    @functools.cache
    def default(cls) -> "AttributeSchema":
        return cls.from_file(SCHEMA_FILE)

    @classmethod
    def from_file(cls, path: pathlib.Path) -> "AttributeSchema":
        return cls.from_dict(yaml.safe_load(pathlib.Path(path).read_text()))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AttributeSchema":
        return cls(data["families"], data.get("synonyms"), int(data.get("version", 1)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "families": {f.name: {"kind": f.kind, "values": list(f.values)} for f in self.families},
            "synonyms": self.synonyms,
        }

    # -- lookup ---------------------------------------------------------------------------------
    def family(self, name: str) -> Family:
        """The family called ``name`` (case and surrounding blanks ignored, as for values)."""
        try:
            return self._by_name[name] if name in self._by_name else self._by_name[
                name.strip().lower()]
        except (KeyError, AttributeError):
            known = ", ".join(self._by_name)
            raise InvalidInput(f"unknown attribute {name!r}; known: {known}") from None

    def canonical_value(self, family: str, value: str) -> str:
        """Map a user's word (``grey``, ``woman``, ``true``) to the family's canonical value."""
        fam = self.family(family)
        v = value.strip().lower()
        v = v if v in fam.values else self._alias.get(v, v)
        if v not in fam.values:
            raise InvalidInput(
                f"unknown value {value!r} for attribute {family!r}; known: {', '.join(fam.values)}"
            )
        return v

    def index(self, family: str, value: str) -> int:
        fam = self.family(family)
        return fam.offset + fam.values.index(self.canonical_value(family, value))

    def names(self) -> list[str]:
        """Flat names ``family=value``, in vector order."""
        return [f"{f.name}={v}" for f in self.families for v in f.values]

    def field_name(self, family: str, value: str) -> str:
        """Milvus scalar field holding P(family=value)."""
        return f"attr_{family}_{self.canonical_value(family, value)}"

    def field_names(self) -> list[str]:
        return [f"attr_{f.name}_{v}" for f in self.families for v in f.values]

    def field_labels(self) -> Mapping[str, str]:
        """Milvus field name -> flat name, ``attr_upper_color_red`` -> ``upper_color=red``
        (shared; do not modify)."""
        return self._field_labels

    # -- vectors --------------------------------------------------------------------------------
    def encode(self, labels: Mapping[str, str | list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Labels -> (target, mask), both ``(dim,)`` float32.

        A family absent from ``labels`` is unknown (mask 0). For a ``multi`` family the listed
        values are 1 and the other values 0; for a ``single`` family exactly one value is given.
        """
        target = np.zeros(self.dim, np.float32)
        mask = np.zeros(self.dim, np.float32)
        for name, val in labels.items():
            fam = self.family(name)
            vals = [val] if isinstance(val, str) else val
            if not isinstance(vals, (list, tuple)) or not all(isinstance(v, str) for v in vals):
                raise InvalidInput(f"attribute {name!r}: a value is a string (a list of "
                                   f"strings for several), got {val!r}; leave an unknown "
                                   "attribute out")
            if fam.kind == "single" and len(vals) != 1:
                raise InvalidInput(f"attribute {name!r} takes one value, got {vals}")
            for v in vals:
                target[self.index(name, v)] = 1.0
            mask[fam.slice] = 1.0
        return target, mask

    def decode(self, probs: np.ndarray, threshold: float = 0.5) -> dict[str, str | list[str]]:
        """Probabilities ``(dim,)`` -> most likely value per single family, values over
        ``threshold`` per multi family (the single most likely one if none passes)."""
        out: dict[str, str | list[str]] = {}
        for f in self.families:
            p = np.asarray(probs[f.slice])
            if f.kind == "single":
                out[f.name] = f.values[int(p.argmax())]
            else:
                hits = [v for v, q in zip(f.values, p) if q >= threshold]
                out[f.name] = hits or [f.values[int(p.argmax())]]
        return out

    def attribute_space(self, probs: np.ndarray, eps: float = 1e-4) -> np.ndarray:
        """Predicted probabilities -> unit vectors of CMAAM's attribute space (Eqs. 3, 8).

        Our towers' attribute logits are CMAAM's attribute-space embeddings ``a_I`` / ``a_T``,
        and what is stored per detection is their probabilities, so the logits are recovered
        from them: ``log(p / (1 - p))`` for a ``multi`` value, and ``log p`` minus the family's
        mean for a ``single`` family (a softmax fixes its logits only up to a shift; the
        centred ones are the representative with mean 0). ``S_a`` (Eq. 8) is then the inner
        product of two rows.

        Args:
            probs: ``(N, dim)`` probabilities in the schema's layout.
            eps: probabilities are clipped to ``[eps, 1 - eps]`` so a certain value stays finite.

        Returns:
            ``(N, dim)`` float32 rows of unit length; a row whose logits are all 0 (every
            value as likely as not) stays 0.
        """
        p = np.clip(np.asarray(probs, np.float64), eps, 1.0 - eps)
        if p.ndim != 2 or p.shape[1] != self.dim:
            raise InvalidInput(f"attribute probabilities must be (N, {self.dim}), got {p.shape}")
        logp = np.log(p)
        out = np.where(self._multi, logp - np.log1p(-p), logp - logp @ self._single_mean)
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.where(norm > 0, norm, 1.0)).astype(np.float32)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AttributeSchema) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple((f.name, f.kind, f.values) for f in self.families))


def latent_attribute_score(latent: Any, attribute: Any, weight: float) -> Any:
    """CMAAM's latent + attribute similarity of a text query and an image (Eq. 19).

    The paper ranks by ``S_l + S_a``; dividing by ``1 + weight`` ranks the same and keeps the
    score a similarity in ``[-1, 1]``, so a threshold reads as it does for the other queries.

    Args:
        latent: cosine ``S_l`` of the joint embeddings (a float or an array).
        attribute: ``S_a``, the inner product of their :meth:`AttributeSchema.attribute_space`
            vectors (same shape as ``latent``).
        weight: weight of ``S_a`` (1 in the paper; 0 leaves ``latent`` unchanged).
    """
    return (latent + weight * attribute) / (1.0 + weight)
