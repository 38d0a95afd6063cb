"""The Milvus collection of stored detections, one collection per model version behind an alias.

Milvus 2.3 allows one vector field per collection. It holds the joint embedding followed by the
detection's attribute-space vector (:class:`VectorLayout`), so that CMAAM's latent + attribute
similarity of a text query is an inner product the index searches directly; every attribute
probability is also a FLOAT scalar field (``attr_<family>_<value>``), which lets a query filter
hard on attributes and re-rank by them. With ``milvus.camera_partition_key`` on,
``camera_id`` is the partition key, so a camera filter prunes partitions instead of scanning them;
it is off by default because Milvus 2.3.5, the embedded server, files *upserted* rows of a
partition-key collection under the wrong partition (milvus-io/milvus#30607), and a camera filter
then misses them.

Ids are deterministic (``hash(camera, track, window)``) and written with ``upsert``: a replay
after a crash overwrites the same rows instead of adding copies (Milvus ``insert`` does not
deduplicate primary keys).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from pedsearch.attributes import AttributeSchema
from pedsearch.config import MilvusConfig
from pedsearch.errors import ConfigError, NotReady, Unavailable

log = logging.getLogger("pedsearch.schema")

CAMERA_ID_MAX = 64
CROP_REF_MAX = 512
MODEL_VERSION_MAX = 64
#: Milvus' error code for an alias that does not exist (2.3: "alias not found")
ALIAS_NOT_FOUND = 1600
_COLLECTION_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,254}\Z")

SCALAR_FIELDS = (
    "id", "camera_id", "ts_us", "track_id", "frame_seq", "box_x", "box_y", "box_w", "box_h",
    "det_score", "crop_ref", "model_version",
)


@dataclass(frozen=True)
class VectorLayout:
    """What a collection's vector field holds, and the query vectors that search it.

    A row stores ``x = [e ; a]``: the ``(D,)`` unit joint embedding, then the ``(A,)`` unit
    attribute-space vector of its predicted attributes (:meth:`AttributeSchema.attribute_space`;
    0 when every value is exactly as likely as not). A text query searches ``q = [t ; w a_t]``,
    whose inner product with every row is ``t.e + w a_t.a = S_l + w S_a``: CMAAM's latent +
    attribute similarity (Eq. 19, :func:`pedsearch.attributes.latent_attribute_score` times
    ``1 + w``). So the index ranks text queries by it over every row, where re-ranking the best
    cosines would miss a person whose attributes fit but whose cosine is not among them, and
    reads no more rows than it returns. Image and attribute queries search ``[q ; 0]``: their
    cosine alone.

    ``attribute_dim`` 0 is the layout of collections made before this one (the joint embedding
    alone); they are still written and searched, the gateway then re-ranks text queries.

    Attributes:
        embed_dim: ``D``, the model's joint embedding size.
        attribute_dim: ``A``, the attribute schema's ``dim``, or 0 (the earlier layout).
    """

    embed_dim: int
    attribute_dim: int

    @property
    def dim(self) -> int:
        """The vector field's dimension."""
        return self.embed_dim + self.attribute_dim

    @property
    def row_norm_sq(self) -> float:
        """``|x|^2`` of a stored row: 2 with an attribute part (two unit vectors), else 1."""
        return 2.0 if self.attribute_dim else 1.0

    @classmethod
    def current(cls, embed_dim: int, attributes: AttributeSchema) -> "VectorLayout":
        """The layout new collections get."""
        return cls(int(embed_dim), attributes.dim)

    @classmethod
    def of_collection(cls, vector_dim: int, embed_dim: int,
                      attributes: AttributeSchema) -> "VectorLayout | None":
        """The layout of a collection whose vector field has ``vector_dim`` for a model of
        ``embed_dim`` (``None``: neither layout, the collection is of another model)."""
        for layout in (cls.current(embed_dim, attributes), cls(int(embed_dim), 0)):
            if layout.dim == int(vector_dim):
                return layout
        return None

    def stored(self, embeddings: np.ndarray, probs: np.ndarray,
               attributes: AttributeSchema) -> np.ndarray:
        """``(N, D)`` unit embeddings and ``(N, A)`` probabilities -> ``(N, dim)`` float32 rows."""
        e = np.atleast_2d(np.asarray(embeddings, np.float32))
        if e.shape[1] != self.embed_dim:
            raise ValueError(f"embeddings have {e.shape[1]} values, the layout {self.embed_dim}")
        if not self.attribute_dim:
            return e
        a = attributes.attribute_space(np.atleast_2d(probs))
        if len(a) != len(e):
            raise ValueError(f"{len(e)} embeddings but {len(a)} attribute rows")
        return np.concatenate([e, a], axis=1)

    def query(self, vectors: np.ndarray, attributes: np.ndarray | None = None,
              weight: float = 0.0) -> np.ndarray:
        """``(Q, D)`` query embeddings -> ``(Q, dim)`` search vectors: ``[t ; w a_t]`` with a text
        query's ``(A,)`` attribute-space vector and its weight ``w``, else ``[q ; 0]``."""
        q = np.atleast_2d(np.asarray(vectors, np.float32))
        if q.shape[1] != self.embed_dim:
            raise ValueError(f"query has {q.shape[1]} values, the layout {self.embed_dim}")
        if not self.attribute_dim:
            return q
        tail = np.zeros((len(q), self.attribute_dim), np.float32)
        if attributes is not None and weight > 0:
            tail[:] = float(weight) * np.asarray(attributes, np.float32)
        return np.concatenate([q, tail], axis=1)


@dataclass
class DetectionRow:
    """One stored pedestrian; ``embedding`` is ``(D,)`` L2-normalised, ``attributes`` ``(A,)``."""

    id: int
    camera_id: str
    ts_us: int
    track_id: int
    frame_seq: int
    box: tuple[float, float, float, float]
    det_score: float
    crop_ref: str
    model_version: str
    embedding: Sequence[float]
    attributes: Sequence[float]

    def to_entity(self, schema: AttributeSchema,
                  layout: VectorLayout | None = None) -> dict[str, Any]:
        """The Milvus entity of this row; its vector as ``layout`` (default: the current one)
        lays it out."""
        layout = layout or VectorLayout.current(len(self.embedding), schema)
        row: dict[str, Any] = {
            "id": int(self.id),
            "camera_id": self.camera_id,
            "ts_us": int(self.ts_us),
            "track_id": int(self.track_id),
            "frame_seq": int(self.frame_seq),
            "box_x": float(self.box[0]),
            "box_y": float(self.box[1]),
            "box_w": float(self.box[2]),
            "box_h": float(self.box[3]),
            "det_score": float(self.det_score),
            "crop_ref": self.crop_ref,
            "model_version": self.model_version,
        }
        probs = np.asarray(self.attributes, dtype=np.float32)
        names = schema.field_names()
        if len(probs) != len(names):
            raise ValueError(f"{len(probs)} attribute probabilities for {len(names)} fields")
        # one tolist() per array, not float() per element: ~10x faster on a 1024-d vector
        row["embedding"] = layout.stored(self.embedding, probs, schema)[0].tolist()
        row.update(zip(names, probs.tolist()))
        return row


def version_of_collection(cfg: MilvusConfig, name: str) -> str | None:
    """The model version whose collection is ``name`` (``None``: not one of ``cfg``'s)."""
    prefix = cfg.collection_prefix
    return name[len(prefix):] if name.startswith(prefix) and len(name) > len(prefix) else None


def vector_dim(description: dict[str, Any]) -> int:
    """The dim of the ``embedding`` vector field in a ``describe_collection`` answer (-1: none)."""
    for f in description.get("fields", ()):
        if f.get("name") == "embedding":
            return int(f.get("params", {}).get("dim", -1))
    return -1


def collection_name(cfg: MilvusConfig, model_version: str) -> str:
    """``detections_<model version>``; raises if the result is not a legal Milvus name."""
    name = f"{cfg.collection_prefix}{model_version}"
    if not _COLLECTION_NAME.match(name):
        raise ConfigError(
            f"collection name {name!r} (prefix + model version) must be letters, digits and "
            "underscores, starting with a letter or underscore"
        )
    return name


def build_schema(client: MilvusClient, *, embed_dim: int, attributes: AttributeSchema,
                 camera_partition_key: bool = False, layout: VectorLayout | None = None):
    """The collection schema for embeddings of ``embed_dim`` and the given attribute schema,
    its vector field as ``layout`` lays it out (default: the current layout)."""
    layout = layout or VectorLayout.current(embed_dim, attributes)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("camera_id", DataType.VARCHAR, max_length=CAMERA_ID_MAX,
                     is_partition_key=camera_partition_key)
    schema.add_field("ts_us", DataType.INT64)
    schema.add_field("track_id", DataType.INT64)
    schema.add_field("frame_seq", DataType.INT64)
    for f in ("box_x", "box_y", "box_w", "box_h", "det_score"):
        schema.add_field(f, DataType.FLOAT)
    schema.add_field("crop_ref", DataType.VARCHAR, max_length=CROP_REF_MAX)
    schema.add_field("model_version", DataType.VARCHAR, max_length=MODEL_VERSION_MAX)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=layout.dim)
    for name in attributes.field_names():
        schema.add_field(name, DataType.FLOAT)
    return schema


def connect(cfg: MilvusConfig) -> MilvusClient:
    """A client for ``cfg.uri``; raises :class:`Unavailable` with the address if unreachable."""
    try:
        return MilvusClient(uri=cfg.uri, token=cfg.token or "", timeout=cfg.timeout_s)
    except MilvusException as exc:
        raise Unavailable(
            f"cannot reach Milvus at {cfg.uri} ({exc}); start the local stack with "
            "`pedsearch stack up` or set PEDSEARCH_MILVUS__URI"
        ) from exc


def _add_scalar_index(index, field: str) -> None:
    """Add the index of scalar ``field`` to pymilvus ``IndexParams``: Milvus 2.3 has no
    INVERTED index yet, so Trie for the camera id string and STL_SORT for numbers."""
    index.add_index(field_name=field, index_name=f"{field}_idx",
                    index_type="Trie" if field == "camera_id" else "STL_SORT")


class DetectionCollections:
    """Creates, loads and aliases the per-model-version detection collections.

    Args:
        client: a connected ``MilvusClient``.
        cfg: Milvus configuration (alias, prefix, index).
    """

    def __init__(self, client: MilvusClient, cfg: MilvusConfig) -> None:
        self.client = client
        self.cfg = cfg
        # collection -> its vector layout (asked once: upserts need it per batch)
        self._layouts: dict[str, VectorLayout] = {}

    def ensure(
        self, model_version: str, *, embed_dim: int, attributes: AttributeSchema,
        make_alias: bool = True,
    ) -> str:
        """Create (if missing), index and load the collection of ``model_version``.

        The alias is pointed at it only if the alias does not exist yet: moving an existing
        alias to a new version is a roll-out step (:meth:`switch_alias`), not a side effect.

        Returns:
            The concrete collection name.
        """
        name = collection_name(self.cfg, model_version)
        if not self.client.has_collection(name):
            schema = build_schema(self.client, embed_dim=embed_dim, attributes=attributes,
                                  camera_partition_key=self.cfg.camera_partition_key)
            index = self.client.prepare_index_params()
            index.add_index(
                field_name="embedding", index_type=self.cfg.index_type,
                metric_type=self.cfg.metric_type, params=dict(self.cfg.index_params),
            )
            for field in dict.fromkeys(self.cfg.scalar_indexes):
                _add_scalar_index(index, field)
            self.client.create_collection(
                name, schema=schema, index_params=index, shards_num=self.cfg.shards_num,
                consistency_level="Bounded",
            )
            self._layouts[name] = VectorLayout.current(embed_dim, attributes)
            log.info("created collection %s (dim %d + %d attribute space, %s; scalar indexes "
                     "on %s)", name, embed_dim, attributes.dim, self.cfg.index_type,
                     ", ".join(self.cfg.scalar_indexes) or "none")
        else:
            self._check_compatible(name, embed_dim, attributes)
        self.wait_loaded(name)
        if make_alias and self.resolve_alias() is None:
            self.client.create_alias(name, self.cfg.alias)
            log.info("alias %s -> %s", self.cfg.alias, name)
        return name

    def _check_compatible(self, name: str, embed_dim: int, attributes: AttributeSchema) -> None:
        desc = self.client.describe_collection(name)
        fields = {f["name"] for f in desc["fields"]}
        dim = vector_dim(desc)
        missing = [f for f in attributes.field_names() if f not in fields]
        layout = VectorLayout.of_collection(dim, embed_dim, attributes)
        if layout is None or missing:
            raise ConfigError(
                f"collection {name} exists with vector dim {dim} and {len(missing)} missing "
                f"attribute fields; the model bundle needs dim {embed_dim} + {attributes.dim} "
                f"(or the earlier layout's {embed_dim}). Drop it or give the bundle a new model "
                "version."
            )
        if not layout.attribute_dim:
            log.warning(
                "collection %s was made by an earlier pedsearch: its vectors hold the joint "
                "embedding alone, so the gateway ranks text queries by re-ranking their best "
                "cosines instead of searching CMAAM's latent + attribute similarity over every "
                "row. Rolling out a new model version (`pedsearch rollout`) makes a collection "
                "of the current layout.", name)
        self._layouts[name] = layout

    def layout(self, name: str, embed_dim: int, attributes: AttributeSchema) -> VectorLayout:
        """The vector layout of collection ``name`` for a model of ``embed_dim``.

        Raises:
            ConfigError: the collection's vectors fit neither layout of that model.
        """
        layout = self._layouts.get(name)
        if layout is None or layout.embed_dim != embed_dim:
            self._check_compatible(name, embed_dim, attributes)
            layout = self._layouts[name]
        return layout

    def _add_missing_scalar_indexes(self, name: str, *, loaded: bool) -> None:
        """Index the configured scalar fields that ``name`` has no index on (a collection made
        before ``milvus.scalar_indexes`` listed them).

        Milvus 2.3 refuses to load a collection whose indexes changed while it was loaded, and
        releasing it would fail every query until it is loaded again. So the indexes are added
        only while it is not loaded (after a Milvus restart, before the first load); a loaded
        one keeps scanning its filters and the log says when they will come.
        """
        have = self.indexes(name)  # one listing, not one per configured field
        missing = [f for f in dict.fromkeys(self.cfg.scalar_indexes) if f not in have]
        if not missing:
            return
        if loaded:
            log.warning(
                "collection %s has no index on %s (it was made before milvus.scalar_indexes "
                "listed them), so camera and time filters scan every row. Milvus cannot add an "
                "index to a loaded collection: they are added the next time it is loaded, e.g. "
                "after a Milvus restart (queries fail while it reloads).", name,
                ", ".join(missing))
            return
        index = self.client.prepare_index_params()
        for field in missing:
            _add_scalar_index(index, field)
        self.client.create_index(name, index)
        log.info("collection %s: building scalar indexes on %s", name, ", ".join(missing))

    def wait_loaded(self, name: str, timeout_s: float = 120.0, *,
                    state: str | None = None) -> None:
        """Load ``name`` and wait for it: after a Milvus restart search fails until it is.

        Configured scalar indexes ``name`` lacks are added first if it is not loaded yet.
        Every Milvus call gets what is left of ``timeout_s``: pymilvus's ``load_collection``
        would otherwise wait for the load without end.

        Args:
            state: the load state the caller has just read (saves asking again).

        Raises:
            NotReady: not loaded within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s

        def left() -> float:
            return max(0.5, deadline - time.monotonic())

        if state is None:
            state = str(self.client.get_load_state(name, timeout=left()).get("state"))
        self._add_missing_scalar_indexes(name, loaded=not state.endswith("NotLoad"))
        try:
            self.client.load_collection(name, timeout=left())
        except MilvusException:
            if time.monotonic() < deadline:
                raise
            # its own wait for the load ran out of time: say so below, as for any other state
        while True:
            state = str(self.client.get_load_state(name, timeout=left()).get("state"))
            if state.endswith("Loaded"):
                return
            if time.monotonic() > deadline:
                raise NotReady(f"collection {name} did not load within {timeout_s:.0f} s ({state})")
            time.sleep(0.5)

    def indexes(self, name: str) -> dict[str, dict[str, Any]]:
        """``field name -> describe_index`` of every index of ``name`` (type, indexed rows)."""
        infos = (self.client.describe_index(name, index)
                 for index in self.client.list_indexes(name))
        return {info["field_name"]: info for info in infos}

    def wait_indexed(self, name: str, rows: int | None, *, timeout_s: float = 7200.0,
                     on_progress: Callable[[str, int], None] | None = None) -> dict[str, dict]:
        """Wait until every index of ``name`` (vector and scalar) covers ``rows`` sealed rows
        (``None``: every row sealed by then, for a collection that is still being written).

        Growing segments are searched by brute force and filtered by a scan, so timings and
        index checks need this first (after a flush). ``on_progress(field, indexed_rows)`` is
        called at each poll. Returns :meth:`indexes`.

        Raises:
            NotReady: an index was not built within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            infos = self.indexes(name)
            behind = {f: i for f, i in infos.items()
                      if int(i.get("indexed_rows", 0)) < (
                          int(i.get("total_rows", 0)) if rows is None else rows)
                      or int(i.get("pending_index_rows", 0))}
            if not behind:
                return infos
            field, info = next(iter(behind.items()))
            if on_progress is not None:
                on_progress(field, int(info.get("indexed_rows", 0)))
            if time.monotonic() > deadline:
                raise NotReady(f"the index on {field} of {name} was not built within "
                               f"{timeout_s:.0f} s: {info}")
            time.sleep(min(2.0, max(0.1, timeout_s / 100)))

    def settle(self, name: str, rows: int | None, *, timeout_s: float = 7200.0,
               on_progress: Callable[[str], None] | None = None) -> None:
        """Compact the sealed segments of ``name`` now and wait until the result is indexed.

        About half a minute after a bulk insert is sealed and indexed, Milvus compacts its small
        segments on its own and rebuilds their indexes: at 100k rows that kept both cores of a
        2-core machine busy for about 70 s. Whatever is timed or served then competes with it.
        ``on_progress(phase)`` says which wait is running. ``rows`` as in :meth:`wait_indexed`.

        Not waited for (measured in session 20 on 3 segments of 100 rows): Milvus 2.3's manual
        compaction may first rewrite each segment alone; its own merge of those follows when
        its background trigger chooses: 40-66 s after this returned on a quiet machine, and
        not within 300 s once under CI's load.

        Raises:
            NotReady: the compaction or the indexes did not finish within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        job = self.client.compact(name, timeout=60)
        if on_progress is not None:
            on_progress("compacting")
        while (state := self.client.get_compaction_state(job, timeout=60)) != "Completed":
            if time.monotonic() > deadline:
                raise NotReady(f"Milvus did not finish compacting {name} within "
                               f"{timeout_s:.0f} s (compaction {job}: {state})")
            time.sleep(1.0)
        if on_progress is not None:
            on_progress("indexing")
        self.wait_indexed(name, rows, timeout_s=max(1.0, deadline - time.monotonic()))

    def resolve_alias(self) -> str | None:
        """The concrete collection behind the alias, or ``None`` if the alias does not exist.

        Raises:
            Unavailable: Milvus did not say (a timeout, a busy server): taken for "no alias", a
                roll-out would move the alias without copying the history behind it.
        """
        # pymilvus logs every failed RPC at ERROR; a missing alias is an expected answer here
        quiet = logging.getLogger("pymilvus.decorators")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            return self.client.describe_alias(self.cfg.alias)["collection_name"]
        except MilvusException as exc:
            if exc.code == ALIAS_NOT_FOUND or "alias not found" in str(exc.message).lower():
                return None
            raise Unavailable(f"Milvus at {self.cfg.uri} did not say which collection the alias "
                              f"{self.cfg.alias} points at ({exc.message}); retry") from exc
        finally:
            quiet.setLevel(level)

    def switch_alias(self, name: str, *, expected: str | None) -> None:
        """Point the alias at ``name`` atomically (zero-downtime roll-out).

        Args:
            expected: the collection the caller saw behind the alias (``None``: no alias).

        Raises:
            NotReady: the alias has moved since (another roll-out, or a hand): what the caller
                copied is not what is behind it, so it is left alone.
        """
        current = self.resolve_alias()
        if current != expected:
            raise NotReady(f"the alias was not moved: it points at {current} now, not at "
                           f"{expected} as when this roll-out began, so the detections copied "
                           "are not those behind it; run the command again (the copy is kept)")
        if current is None:
            self.client.create_alias(name, self.cfg.alias)
        else:
            self.client.alter_alias(name, self.cfg.alias)

    def upsert(self, name: str, rows: Iterable[DetectionRow], attributes: AttributeSchema) -> int:
        """Upsert rows, keeping the last row per id within the batch; returns rows written."""
        unique: dict[int, DetectionRow] = {}
        for row in rows:
            unique[int(row.id)] = row
        if not unique:
            return 0
        layout = self.layout(name, len(next(iter(unique.values())).embedding), attributes)
        entities = [r.to_entity(attributes, layout) for r in unique.values()]
        try:
            self.client.upsert(name, entities, timeout=self.cfg.timeout_s)
        except MilvusException:
            # the collection may have been dropped and made again: the retry asks afresh
            self._layouts.pop(name, None)
            raise
        return len(entities)
