"""The query core: text / attributes -> joint embedding -> Milvus search with camera/time filters.

The gRPC service (``pedsearch.v1`` search service, to come) and the demo call this. The alias
is resolved once per request and the concrete collection's model version must be the bundle's:
an embedding of one model version is meaningless in another version's space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from pedsearch.bundle import Bundle
from pedsearch.config import MilvusConfig
from pedsearch.envelope import CAMERA_ID
from pedsearch.errors import InvalidInput, NotReady, Unavailable
from pedsearch.schema import SCALAR_FIELDS, collection_name

MAX_TEXT_CHARS = 1000
MAX_K = 1000


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
    attributes: dict[str, float] = field(default_factory=dict)


def filter_expression(cameras: Sequence[str] = (), since_us: int | None = None,
                      until_us: int | None = None) -> str:
    """Milvus boolean expression for a camera set and a time range (inclusive)."""
    parts = []
    if cameras:
        for cam in cameras:
            if not CAMERA_ID.match(cam):
                raise InvalidInput(f"camera id {cam!r} is invalid")
        parts.append("camera_id in [" + ", ".join(f'"{c}"' for c in cameras) + "]")
    if since_us is not None and until_us is not None and since_us > until_us:
        raise InvalidInput(f"time range is inverted: since {since_us} > until {until_us}")
    if since_us is not None:
        parts.append(f"ts_us >= {int(since_us)}")
    if until_us is not None:
        parts.append(f"ts_us <= {int(until_us)}")
    return " and ".join(parts)


class Searcher:
    """Searches the live detection index with one model bundle.

    Args:
        client: a connected Milvus client.
        cfg: Milvus configuration (alias, prefix, search parameters).
        bundle: a bundle loaded with the ``text`` and ``attributes`` parts.
    """

    def __init__(self, *, client: MilvusClient, cfg: MilvusConfig, bundle: Bundle) -> None:
        self.client = client
        self.cfg = cfg
        self.bundle = bundle
        self.attribute_fields = bundle.schema.field_names()

    def collection(self) -> str:
        """The concrete collection behind the alias, checked against the bundle's version."""
        try:
            name = self.client.describe_alias(self.cfg.alias)["collection_name"]
        except MilvusException as exc:
            if "not found" in str(exc).lower():
                raise NotReady(f"no index yet: alias {self.cfg.alias!r} does not exist; start "
                               "the workers so detections are indexed") from None
            raise Unavailable(f"Milvus at {self.cfg.uri} failed: {exc}") from exc
        expected = collection_name(self.cfg, self.bundle.version)
        if name != expected:
            raise NotReady(f"alias {self.cfg.alias!r} points at {name}, but the loaded model is "
                           f"{self.bundle.version}; load the bundle of that collection")
        return name

    def search_text(self, text: str, *, k: int = 10, cameras: Sequence[str] = (),
                    since_us: int | None = None, until_us: int | None = None) -> list[Hit]:
        text = (text or "").strip()
        if not text:
            raise InvalidInput("query text is empty")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidInput(f"query text has {len(text)} characters; at most {MAX_TEXT_CHARS}")
        vec = self.bundle.encode_texts([text])[0]
        return self.search_vector(vec, k=k, cameras=cameras, since_us=since_us, until_us=until_us)

    def search_attributes(self, attributes: Mapping[str, str | list[str]], *, k: int = 10,
                          cameras: Sequence[str] = (), since_us: int | None = None,
                          until_us: int | None = None) -> list[Hit]:
        if not attributes:
            raise InvalidInput("no attributes given")
        canonical = {}
        for fam, val in attributes.items():
            vals = [val] if isinstance(val, str) else list(val)
            vs = [self.bundle.schema.canonical_value(fam, v) for v in vals]
            canonical[fam] = vs[0] if self.bundle.schema.family(fam).kind == "single" else vs
        vec = self.bundle.encode_attribute_sets([canonical])[0]
        return self.search_vector(vec, k=k, cameras=cameras, since_us=since_us, until_us=until_us)

    def search_vector(self, vector: np.ndarray, *, k: int = 10, cameras: Sequence[str] = (),
                      since_us: int | None = None, until_us: int | None = None) -> list[Hit]:
        if not 1 <= int(k) <= MAX_K:
            raise InvalidInput(f"top-k must be 1..{MAX_K}, got {k}")
        name = self.collection()
        expr = filter_expression(cameras, since_us, until_us)
        try:
            res = self.client.search(
                name, data=[np.asarray(vector, np.float32).tolist()], anns_field="embedding",
                limit=int(k), filter=expr,
                search_params={"metric_type": self.cfg.metric_type,
                               "params": dict(self.cfg.search_params)},
                output_fields=[f for f in SCALAR_FIELDS if f != "id"] + self.attribute_fields,
                timeout=self.cfg.timeout_s,
            )
        except MilvusException as exc:
            raise Unavailable(f"Milvus search on {name} failed: {exc}") from exc
        hits = []
        for h in res[0]:
            e = h["entity"]
            hits.append(Hit(
                id=int(h["id"]), score=float(h["distance"]), camera_id=e["camera_id"],
                ts_us=int(e["ts_us"]), track_id=int(e["track_id"]),
                frame_seq=int(e["frame_seq"]),
                box=(e["box_x"], e["box_y"], e["box_w"], e["box_h"]), crop_ref=e["crop_ref"],
                model_version=e["model_version"],
                attributes={f: float(e[f]) for f in self.attribute_fields},
            ))
        return hits

