"""The indexing stage: embedded crops -> crop store + Milvus upsert (deterministic ids)."""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import numpy as np
from pymilvus.exceptions import MilvusException

from pedsearch.attributes import AttributeSchema
from pedsearch.cropstore import CropStore
from pedsearch.envelope import encode_jpeg
from pedsearch.errors import Unavailable
from pedsearch.schema import DetectionCollections, DetectionRow

from workers.pipeline import CropCandidate

log = logging.getLogger("pedsearch.workers")

EmbedFn = Callable[[Sequence[np.ndarray]], tuple[np.ndarray, np.ndarray]]


class EmbedIndexSink:
    """Embeds crops, stores their JPEGs, upserts their rows; returns after Milvus acked.

    The crop JPEG is written before the row, so a row the gateway finds always has its crop.
    Milvus refusals (quota, memory, a restart in progress) are retried with backoff: a slow or
    restarting Milvus slows consumption instead of losing rows.

    Args:
        embed: crops -> (embeddings (N, D), attribute probabilities (N, A)); if it also has
            ``submit(crops) -> handle`` and ``result(handle)`` (an :class:`EmbedderPool`),
            :meth:`start` begins the embedding before :meth:`finish` waits for it.
        collections: the Milvus collection manager.
        collection: concrete collection name for this model version.
        crop_store: where the crop JPEGs go.
        attributes: the attribute schema of the bundle.
        model_version: stored on every row.
        retries: Milvus write attempts before giving up (the frames are then replayed).
        on_indexed: called with the rows once Milvus acknowledged them (the live feed that
            standing queries watch); its failure is logged, never fails the write.
    """

    def __init__(
        self, *, embed: EmbedFn, collections: DetectionCollections, collection: str,
        crop_store: CropStore, attributes: AttributeSchema, model_version: str,
        retries: int = 8, jpeg_quality: int = 90,
        on_indexed: Callable[[list[DetectionRow]], None] | None = None,
    ) -> None:
        self.embed = embed
        self.collections = collections
        self.collection = collection
        self.crop_store = crop_store
        self.attributes = attributes
        self.model_version = model_version
        self.retries = retries
        self.jpeg_quality = jpeg_quality
        self.on_indexed = on_indexed

    def write(self, crops: list[CropCandidate]) -> int:
        """Embed, store and upsert ``crops``; returns once Milvus acknowledged them."""
        return self.finish(self.start(crops))

    def start(self, crops: list[CropCandidate]) -> tuple[list[CropCandidate], object]:
        """Begin the write without blocking: an embedder pool starts embedding at once.

        Returns the handle :meth:`finish` completes (on another thread, see
        :class:`workers.writes.WriteQueue`).
        """
        submit = getattr(self.embed, "submit", None)
        started = submit([c.crop for c in crops]) if (crops and submit is not None) else None
        return crops, started

    def finish(self, handle: tuple[list[CropCandidate], object]) -> int:
        """Wait for the embeddings, store the crops, upsert the rows; returns rows written."""
        crops, started = handle
        if not crops:
            return 0
        if started is not None:
            emb, probs = self.embed.result(started)
        else:  # an in-process embedder: the embedding runs here, off the consumer thread
            emb, probs = self.embed([c.crop for c in crops])
        rows = []
        for c, e, p in zip(crops, emb, probs, strict=True):
            ts_us = int(round(c.ts * 1e6))
            ref = CropStore.ref_for(c.camera_id, ts_us, c.id)
            self.crop_store.put(ref, encode_jpeg(c.crop, self.jpeg_quality))
            rows.append(DetectionRow(
                id=c.id, camera_id=c.camera_id, ts_us=ts_us, track_id=c.track_id,
                frame_seq=c.frame_seq, box=tuple(float(v) for v in c.box),
                det_score=float(c.det_score), crop_ref=ref, model_version=self.model_version,
                embedding=e, attributes=p,
            ))
        delay = 0.5
        for attempt in range(1, self.retries + 1):
            try:
                written = self.collections.upsert(self.collection, rows, self.attributes)
            except MilvusException as exc:
                if attempt == self.retries:
                    raise Unavailable(
                        f"Milvus refused {len(rows)} rows {attempt} times: {exc}"
                    ) from exc
                log.warning("Milvus write failed (%s); retry %d in %.1f s", exc, attempt, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if self.on_indexed is not None:
                try:
                    self.on_indexed(rows)
                except Exception as exc:  # the rows are stored; only live watchers miss them
                    log.warning("live feed publish of %d rows failed: %s", len(rows), exc)
            return written
        return 0
