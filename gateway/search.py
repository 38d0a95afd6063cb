"""The query core: text / attributes / image -> joint embedding -> Milvus search with filters.

The gRPC service (:mod:`gateway.service`) and the demo call this. The alias is resolved once per
request and the concrete collection's model version must be the bundle's: an embedding of one
model version is meaningless in another version's space.

Attribute constraints (:class:`Constraint`) act in one of three ways:

- ``hard``: a Milvus filter on the ``attr_<family>_<value>`` scalar fields -- a hit passes when
  ``P(family=value) >= min_probability`` for at least one of the listed values;
- ``soft``: re-ranking. ``k * rerank_factor`` candidates are fetched and ordered by
  ``score = cosine + soft_weight * geomean_c(max_v P(c.family = v))`` over the soft
  constraints ``c`` and their values ``v`` (:func:`soft_bonus`);
- ``query``: only part of an attribute query's embedding (no filter, no re-ranking).

A text query is ranked as CMAAM ranks it (Eq. 19): by ``(cosine + w * S_a) / (1 + w)``,
``S_a`` being the attribute similarity of the caption's and the detection's predicted attributes
(:class:`TextQuery`, :func:`pedsearch.attributes.latent_attribute_score`; ``w`` is the gateway's
``text_attribute_weight``, by default the bundle's own choice; 0 turns it off). The stored
vectors carry each detection's attribute-space vector (:class:`pedsearch.schema.VectorLayout`),
so Milvus searches that score itself over every row. In a collection made by an earlier version
(the joint embedding alone), ``k * rerank_factor`` cosine candidates are re-ranked by it.
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
import time
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import grpc
import numpy as np
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from pedsearch.attributes import (
    DEFAULT_TEXT_ATTRIBUTE_WEIGHT,
    AttributeSchema,
    latent_attribute_score,
)
from pedsearch.bundle import Bundle
from pedsearch.config import DEFAULT_SOFT_WEIGHT, SOFT_PROBABILITY_FLOOR, MilvusConfig
from pedsearch.envelope import CAMERA_ID
from pedsearch.errors import InvalidInput, NotFound, NotReady, Unavailable
from pedsearch.schema import SCALAR_FIELDS, VectorLayout, vector_dim

log = logging.getLogger("pedsearch.gateway.search")

MAX_TEXT_CHARS = 1000
MAX_K = 1000
#: concepts one attribute query may search at once (see :func:`query_attribute_sets`)
MAX_QUERY_ALTERNATIVES = 16
#: Milvus refuses a search limit above this; over-fetching for re-ranking is capped by it
MILVUS_MAX_LIMIT = 16384
#: about 146,000 years from 1970 in microseconds: no capture time is beyond it
OPEN_TIME_BOUND_US = 2**62


@dataclass
class Hit:
    """One stored detection returned by a search, best first."""

    id: int
    score: float
    camera_id: str
    ts_us: int
    track_id: int
    frame_seq: int
    box: tuple[float, float, float, float]
    crop_ref: str
    model_version: str
    attributes: dict[str, float] = field(default_factory=dict)  # Milvus field name -> prob
    det_score: float = 0.0


@dataclass(frozen=True, eq=False)
class TextQuery:
    """A caption encoded for CMAAM's latent + attribute similarity (Eq. 19).

    Attributes:
        vector: ``(D,)`` unit joint embedding (what Milvus searches).
        attributes: ``(A,)`` unit attribute-space vector of the caption's predicted attributes
            (:meth:`AttributeSchema.attribute_space`), ``A`` the schema's ``dim``.
        weight: the weight ``w`` of their similarity; 0 ranks by the cosine alone.
    """

    vector: np.ndarray
    attributes: np.ndarray
    weight: float = DEFAULT_TEXT_ATTRIBUTE_WEIGHT


@dataclass(frozen=True)
class Constraint:
    """An attribute constraint with canonical family and values.

    Attributes:
        family: attribute family (``upper_color``).
        values: canonical values, any of which satisfies the constraint.
        mode: ``hard`` (filter), ``soft`` (re-rank) or ``query`` (part of the query only).
        min_probability: threshold of a ``hard`` constraint.
    """

    family: str
    values: tuple[str, ...]
    mode: Literal["hard", "soft", "query"] = "soft"
    min_probability: float = 0.5

    def fields(self) -> list[str]:
        """Milvus scalar fields of the values: ``attr_<family>_<value>``."""
        return [f"attr_{self.family}_{v}" for v in self.values]


def make_constraint(schema: AttributeSchema, family: str, values: Sequence[str], *,
                    mode: Literal["hard", "soft", "query"] = "soft",
                    min_probability: float = 0.5) -> Constraint:
    """A :class:`Constraint` with the schema's canonical names.

    Raises:
        InvalidInput: unknown family or value, no values, or ``min_probability`` outside (0, 1].
    """
    fam = schema.family(family)
    if not values:
        raise InvalidInput(f"attribute constraint on {family!r} lists no values; "
                           f"known: {', '.join(fam.values)}")
    if not (isinstance(min_probability, (int, float)) and math.isfinite(min_probability)
            and 0.0 < min_probability <= 1.0):
        raise InvalidInput(f"min_probability of the constraint on {family!r} must be in (0, 1], "
                           f"got {min_probability}")
    canon = tuple(dict.fromkeys(schema.canonical_value(family, v) for v in values))
    return Constraint(fam.name, canon, mode, float(min_probability))


def hard_expression(constraints: Sequence[Constraint]) -> str:
    """Milvus expression of the ``hard`` constraints (AND over constraints, OR over values)."""
    parts = []
    for c in constraints:
        if c.mode != "hard":
            continue
        ors = " or ".join(f"{f} >= {c.min_probability!r}" for f in c.fields())
        parts.append(f"({ors})")
    return " and ".join(parts)


def soft_bonus(probs: Mapping[str, float], constraints: Sequence[Constraint]) -> float:
    """Geometric mean over ``soft`` constraints of the best probability among their values
    (0 if there is no soft constraint).

    The geometric mean is the likelihood of the description per constraint (constraints taken
    as independent): a hit must fit every asked family, where an arithmetic mean lets a good
    fit on most of them hide a clear miss on one. On the shipped bundle's held-out identities
    it ranks attribute queries better (mAP 0.567 vs 0.550 synthetic, 0.349 vs 0.310 PETA;
    docs/RESULTS.md has the training seeds).

    Args:
        probs: Milvus attribute field name -> probability of one hit.
    """
    soft = [c for c in constraints if c.mode == "soft"]
    if not soft:
        return 0.0
    best = [max(probs.get(f, 0.0) for f in c.fields()) for c in soft]
    return math.exp(sum(math.log(max(p, SOFT_PROBABILITY_FLOOR)) for p in best) / len(best))


def passes_hard(probs: Mapping[str, float], constraints: Sequence[Constraint]) -> bool:
    """What :func:`hard_expression` filters, evaluated on one row's probabilities."""
    return all(
        any(probs.get(f, 0.0) >= c.min_probability for f in c.fields())
        for c in constraints if c.mode == "hard"
    )


def query_attribute_sets(schema: AttributeSchema,
                         constraints: Sequence[Constraint]) -> list[dict[str, str | list[str]]]:
    """The attribute sets an attribute query encodes: one per alternative the constraints allow.

    A constraint accepts any of its values and every constraint must hold, so an alternative
    picks one value per constraint: values on a single-valued family must agree (``gender``
    female), those on a multi-valued family add up (``upper_color`` red and blue). One concept
    vector holds one alternative (the generator reads one value per single-valued family), so
    ``footwear=boots,sneakers`` is searched as two concepts, and a hit scores its best.

    Returns:
        the distinct alternatives, in the order of the constraints' values; one when no
        constraint lists several values.

    Raises:
        InvalidInput: the constraints contradict each other (``gender`` female and male), or
            they allow more than :data:`MAX_QUERY_ALTERNATIVES` alternatives.
    """
    # one slot per single-valued family (the values every constraint on it accepts) and one
    # per constraint on a multi-valued family; an alternative picks a value in each slot
    slots: list[tuple[str, tuple[str, ...]]] = []
    single: dict[str, int] = {}
    for c in constraints:
        if schema.family(c.family).kind != "single":
            slots.append((c.family, c.values))
        elif c.family not in single:
            single[c.family] = len(slots)
            slots.append((c.family, c.values))
        else:
            i = single[c.family]
            slots[i] = (c.family, tuple(v for v in slots[i][1] if v in c.values))
    empty = [fam for fam, values in slots if not values]
    if empty:
        asked = "; ".join(f"{c.family}={','.join(c.values)}" for c in constraints
                          if c.family in empty)
        raise InvalidInput(f"the attribute constraints contradict each other ({asked}): no "
                           f"value of {empty[0]!r} satisfies them all; list the values one "
                           "constraint accepts as FAMILY=A,B")
    if math.prod(len(values) for _, values in slots) > MAX_QUERY_ALTERNATIVES ** 2:
        raise InvalidInput(_too_many_alternatives(slots))  # before enumerating them
    out: list[dict[str, str | list[str]]] = []
    for pick in itertools.product(*(values for _, values in slots)):
        alt: dict[str, str | list[str]] = {}
        for (fam, _), value in zip(slots, pick):
            if fam in single:
                alt[fam] = value
            elif value not in alt.setdefault(fam, []):
                alt[fam].append(value)  # type: ignore[union-attr]
        if alt not in out:
            out.append(alt)
    if len(out) > MAX_QUERY_ALTERNATIVES:
        raise InvalidInput(_too_many_alternatives(slots))
    return out


def _too_many_alternatives(slots: Sequence[tuple[str, tuple[str, ...]]]) -> str:
    return (f"the attribute constraints allow more than {MAX_QUERY_ALTERNATIVES} combinations "
            f"of values ({' x '.join(str(len(v)) for _, v in slots)}); list fewer values per "
            "constraint")


def filter_expression(cameras: Sequence[str] = (), since_us: int | None = None,
                      until_us: int | None = None) -> str:
    """Milvus boolean expression for a camera set and a time range (inclusive)."""
    parts = []
    if cameras:
        for cam in cameras:
            if not isinstance(cam, str) or not CAMERA_ID.fullmatch(cam):
                raise InvalidInput(f"camera id {cam!r} is invalid: 1-64 letters, digits or "
                                   "'_.:-', starting with a letter or digit")
        parts.append("camera_id in [" + ", ".join(f'"{c}"' for c in cameras) + "]")
    if since_us is not None and until_us is not None and since_us > until_us:
        raise InvalidInput(f"time range is inverted: since {since_us} > until {until_us}")
    # bounds no capture time can reach are open ends: Milvus' parser cannot read int64 extremes
    if since_us is not None and since_us <= -OPEN_TIME_BOUND_US:
        since_us = None
    if until_us is not None and until_us >= OPEN_TIME_BOUND_US:
        until_us = None
    # ... and bounds beyond them on the other side match nothing, said in numbers it can read
    if until_us is not None and until_us < -OPEN_TIME_BOUND_US:
        until_us = -OPEN_TIME_BOUND_US
    if since_us is not None and since_us > OPEN_TIME_BOUND_US:
        since_us = OPEN_TIME_BOUND_US
    if since_us is not None:
        parts.append(f"ts_us >= {int(since_us)}")
    if until_us is not None:
        parts.append(f"ts_us <= {int(until_us)}")
    return " and ".join(parts)


#: what a pymilvus call raises when Milvus fails: its own exceptions, and the bare gRPC error of
#: a call that ran out of time (a hung or overloaded server), which pymilvus lets through
MILVUS_FAILURES: tuple[type[BaseException], ...] = (MilvusException, grpc.RpcError)


def search_params(params: Mapping[str, int], limit: int) -> dict[str, int]:
    """The index's search parameters for a search of ``limit`` rows (HNSW needs ef >= limit)."""
    out = dict(params)
    if "ef" in out:
        out["ef"] = max(out["ef"], limit)
    return out


def inner_product(distance: float, metric_type: str, query_norm_sq: float,
                  row_norm_sq: float) -> float:
    """Milvus' distance as the inner product ``x.q`` of a stored row and the query vector.

    Every stored row has the same norm (:attr:`VectorLayout.row_norm_sq`) and each query its
    own, so the three metrics rank alike: IP reports ``x.q``, COSINE ``x.q / (|x||q|)``, L2 the
    squared distance ``|x|^2 + |q|^2 - 2 x.q``. For an image or attribute query ``x.q`` is the
    cosine of the joint embeddings; for a text query ``S_l + w S_a``.
    """
    if metric_type == "L2":
        return (row_norm_sq + query_norm_sq - distance) / 2.0
    if metric_type == "COSINE":
        return distance * math.sqrt(row_norm_sq * query_norm_sq)
    return distance


def _milvus_error(exc: BaseException, what: str, uri: str) -> Exception:
    """A Milvus failure as the error a caller can act on."""
    if isinstance(exc, grpc.RpcError) and not isinstance(exc, MilvusException):
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return Unavailable(f"{what}: Milvus at {uri} did not answer in time (hung or "
                               "overloaded?); check it with `pedsearch stack status` or its "
                               "log, and retry")
        name = code.name if code is not None else "an error"
        return Unavailable(f"{what}: Milvus at {uri} answered {name}: {_rpc_details(exc)}")
    text = str(exc).lower()
    if "not loaded" in text or "not load" in text:
        return Unavailable(f"{what}: the collection is not loaded yet (Milvus restarted?); "
                           "retry in a few seconds")
    return Unavailable(f"{what}: Milvus at {uri} failed: {exc}")


def _rpc_details(exc: grpc.RpcError) -> str:
    details = getattr(exc, "details", None)
    return str(details() if callable(details) else exc)


def no_index(cfg: MilvusConfig) -> NotReady:
    """The error of a search before anything was indexed (the alias does not exist yet)."""
    return NotReady(f"no index yet: alias {cfg.alias!r} does not exist; start the workers so "
                    "detections are indexed")


class Searcher:
    """Searches the live detection index with one model bundle.

    Args:
        client: a connected Milvus client.
        cfg: Milvus configuration (alias, prefix, search parameters).
        bundle: a bundle loaded with the ``text`` and ``attributes`` parts (``image`` too for
            :meth:`encode_image`).
        text_attribute_weight: CMAAM's weight of a text query's attribute similarity; None:
            the bundle's (:attr:`Bundle.text_attribute_weight`).
    """

    def __init__(self, *, client: MilvusClient, cfg: MilvusConfig, bundle: Bundle,
                 alias_ttl_s: float = 1.0, text_attribute_weight: float | None = None) -> None:
        self.client = client
        self.cfg = cfg
        self.bundle = bundle
        self.text_attribute_weight = (bundle.text_attribute_weight if text_attribute_weight
                                      is None else float(text_attribute_weight))
        # describe_alias costs a Milvus round trip (~2.5 ms measured) per query; an answer is
        # reused for alias_ttl_s. Each request still resolves once and uses that one name, and
        # only found aliases are kept, so a new index is seen at once.
        self.alias_ttl_s = alias_ttl_s
        self._alias: tuple[str, float] | None = None
        self.attribute_fields = bundle.schema.field_names()
        # a Milvus entity -> its attribute probabilities in schema order, in one C call
        self._attribute_values = operator.itemgetter(*self.attribute_fields)
        self.output_fields = [f for f in SCALAR_FIELDS if f != "id"] + self.attribute_fields
        # collection -> its vector layout: one describe_collection per collection, not per query
        self._layouts: dict[str, VectorLayout] = {}

    def _timeout(self, timeout_s: float | None) -> float:
        return self.cfg.timeout_s if timeout_s is None else max(0.001, min(timeout_s,
                                                                          self.cfg.timeout_s))

    def resolve_alias(self, *, timeout_s: float | None = None) -> str | None:
        """The collection behind the alias, ``None`` if the alias does not exist yet.

        Raises:
            Unavailable: Milvus cannot be reached.
        """
        cached = self._alias
        if cached is not None and time.monotonic() - cached[1] < self.alias_ttl_s:
            return cached[0]
        quiet = logging.getLogger("pymilvus.decorators")  # a missing alias is an answer
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            name = self.client.describe_alias(self.cfg.alias,
                                              timeout=self._timeout(timeout_s))["collection_name"]
            self._alias = (name, time.monotonic())
            return name
        except MILVUS_FAILURES as exc:
            text = str(exc).lower()
            if isinstance(exc, MilvusException) and ("not found" in text or "not exist" in text):
                return None
            raise _milvus_error(exc, f"alias {self.cfg.alias!r}", self.cfg.uri) from exc
        finally:
            quiet.setLevel(level)

    def layout(self, collection: str, *, timeout_s: float | None = None) -> VectorLayout:
        """The vector layout of ``collection`` (asked of Milvus once, then remembered).

        Raises:
            NotReady: its vectors fit neither layout of this bundle's model.
            Unavailable: Milvus cannot be reached.
        """
        layout = self._layouts.get(collection)
        if layout is not None:
            return layout
        try:
            desc = self.client.describe_collection(collection, timeout=self._timeout(timeout_s))
        except MILVUS_FAILURES as exc:
            raise _milvus_error(exc, f"describe {collection}", self.cfg.uri) from exc
        dim = vector_dim(desc)
        layout = VectorLayout.of_collection(dim, self.bundle.embed_dim, self.bundle.schema)
        if layout is None:
            raise NotReady(f"collection {collection} holds vectors of dim {dim}, which model "
                           f"{self.bundle.version} "
                           f"(dim {self.bundle.embed_dim} + {self.bundle.schema.dim}) did not "
                           "write; re-index it with this bundle or point the alias elsewhere")
        self._layouts[collection] = layout
        return layout

    # -- encoders --------------------------------------------------------------------------------
    def encode_text(self, text: str) -> TextQuery:
        """A query text -> its :class:`TextQuery`; raises :class:`InvalidInput` if unusable."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("query text is empty")
        text = text.strip()
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidInput(f"query text has {len(text)} characters; at most {MAX_TEXT_CHARS}")
        try:
            emb, probs = self.bundle.encode_texts_with_attributes([text])
        except InvalidInput as exc:
            raise InvalidInput(exc.message.replace("text 0 ", "query text ", 1)) from None
        return TextQuery(emb[0], self.bundle.schema.attribute_space(probs)[0],
                         self.text_attribute_weight)

    def encode_constraints(self, constraints: Sequence[Constraint]) -> np.ndarray:
        """An attribute query -> ``(A, D)`` unit vectors: one concept per alternative its
        constraints allow (:func:`query_attribute_sets`), encoded in one batch."""
        return self.bundle.encode_attribute_sets(
            query_attribute_sets(self.bundle.schema, constraints))

    def encode_image(self, image_bgr: np.ndarray) -> np.ndarray:
        """A decoded crop ``(h, w, 3)`` BGR uint8 -> ``(D,)`` unit vector."""
        emb, _probs = self.bundle.encode_images([image_bgr])
        return emb[0]

    # -- searches --------------------------------------------------------------------------------
    def search_vector(
        self, vector: np.ndarray | TextQuery, *, k: int = 10, cameras: Sequence[str] = (),
        since_us: int | None = None, until_us: int | None = None,
        constraints: Sequence[Constraint] = (), min_score: float | None = None,
        soft_weight: float = DEFAULT_SOFT_WEIGHT, rerank_factor: int = 4,
        collection: str, timeout_s: float | None = None,
    ) -> list[Hit]:
        """The ``k`` best stored detections for a query vector, or for the best of several.

        Args:
            vector: ``(D,)`` unit query embedding of the bundle's model version, ``(A, D)``
                alternatives (an attribute query's concepts): one Milvus search of ``A``
                queries, each hit scored by its best; or a :class:`TextQuery`, ranked by
                CMAAM's latent + attribute similarity (Eq. 19) when its weight is above 0.
            k: hits wanted, 1..1000.
            cameras, since_us, until_us: where and when (inclusive); empty = anywhere.
            constraints: attribute constraints (hard filter / soft re-rank, see the module).
            min_score: drop hits scoring below it (after re-ranking).
            soft_weight, rerank_factor: the re-ranking formula's weight and over-fetch factor.
            collection: the concrete collection the alias points at (resolved once per
                request by the caller, :meth:`gateway.service.MilvusLink.route`).
            timeout_s: Milvus call timeout (capped by ``cfg.timeout_s``).

        Returns:
            hits, best first.
        """
        if not 1 <= int(k) <= MAX_K:
            raise InvalidInput(f"top_k must be 1..{MAX_K}, got {k}")
        expr = filter_expression(cameras, since_us, until_us)
        hard = hard_expression(constraints)
        expr = " and ".join(p for p in (expr, hard) if p)
        soft = any(c.mode == "soft" for c in constraints) and soft_weight > 0
        text = vector if isinstance(vector, TextQuery) else None
        by_attributes = text is not None and text.weight > 0
        layout = self.layout(collection, timeout_s=timeout_s)
        # the index searches S_l + w S_a itself where the rows carry their attribute space;
        # a collection of the earlier layout re-ranks the best cosines by it
        rerank_text = by_attributes and not layout.attribute_dim
        if text is not None:
            data = layout.query(text.vector, text.attributes if by_attributes else None,
                                text.weight)
        else:
            data = layout.query(vector)
        limit = min(MILVUS_MAX_LIMIT, int(k) * (rerank_factor if soft or rerank_text else 1))
        try:
            res = self.client.search(
                collection, data=data.tolist(), anns_field="embedding",
                limit=limit, filter=expr,
                search_params={"metric_type": self.cfg.metric_type,
                               "params": self._search_params(limit)},
                output_fields=self.output_fields, timeout=self._timeout(timeout_s),
            )
        except MILVUS_FAILURES as exc:
            # the collection may have been dropped and made again: the next search asks afresh
            self._layouts.pop(collection, None)
            raise _milvus_error(exc, f"search on {collection}", self.cfg.uri) from exc
        query_norms_sq = np.einsum("qd,qd->q", data, data).tolist()
        # id -> (inner product with the query, Milvus entity): a hit of several concepts
        # scores its best
        best: dict[int, tuple[float, Mapping]] = {}
        for answers, q_sq in zip(res, query_norms_sq):  # one list per query vector
            for h in answers:
                i = int(h["id"])
                ip = inner_product(float(h["distance"]), self.cfg.metric_type, q_sq,
                                   layout.row_norm_sq)
                if i not in best or ip > best[i][0]:
                    best[i] = (ip, h["entity"])
        ids = list(best)
        scores = np.array([best[i][0] for i in ids], np.float64)
        if rerank_text and ids:
            probs = np.array([self._attribute_values(best[i][1]) for i in ids], np.float32)
            s_a = self.bundle.schema.attribute_space(probs) @ np.asarray(text.attributes,
                                                                         np.float32)
            scores = latent_attribute_score(scores, s_a, text.weight)
        elif by_attributes:  # the inner product is S_l + w S_a: Eq. 19's score times 1 + w
            scores = scores / (1.0 + text.weight)
        if soft:
            scores += soft_weight * np.array([soft_bonus(best[i][1], constraints) for i in ids])
        hits: list[Hit] = []
        # only the hits returned become Hit objects (48 attribute fields each): a re-ranked
        # search reads k * rerank_factor candidates
        for j in np.argsort(-scores, kind="stable").tolist():
            if len(hits) == int(k) or (min_score is not None and scores[j] < min_score):
                break
            hits.append(self._hit(best[ids[j]][1], ids[j], float(scores[j])))
        return hits

    def _search_params(self, limit: int) -> dict[str, int]:
        return search_params(self.cfg.search_params, limit)

    def get(self, detection_id: int, *, collection: str,
            timeout_s: float | None = None) -> Hit:
        """One stored detection by id (score 0).

        Raises:
            NotFound: no detection has that id in the current collection.
        """
        try:
            # Milvus' parser reads "-9223372036854775808" as minus an out-of-range literal
            expr = (f"id == {int(detection_id)}" if detection_id > -(2**63)
                    else f"id < {-(2**63) + 1}")
            rows = self.client.query(collection, filter=expr,
                                     output_fields=self.output_fields,
                                     timeout=self._timeout(timeout_s))
        except MILVUS_FAILURES as exc:
            raise _milvus_error(exc, f"query on {collection}", self.cfg.uri) from exc
        if not rows:
            raise NotFound(f"no detection with id {detection_id} in {collection}")
        return self._hit(rows[0], int(detection_id), 0.0)

    def _hit(self, e: Mapping, detection_id: int, score: float) -> Hit:
        return Hit(
            id=detection_id, score=score, camera_id=e["camera_id"],
            ts_us=int(e["ts_us"]), track_id=int(e["track_id"]), frame_seq=int(e["frame_seq"]),
            box=(e["box_x"], e["box_y"], e["box_w"], e["box_h"]), crop_ref=e["crop_ref"],
            model_version=e["model_version"], det_score=float(e.get("det_score", 0.0)),
            attributes={f: float(e[f]) for f in self.attribute_fields},
        )
