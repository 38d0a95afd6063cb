"""The live feed of indexed detections: a Redis stream the indexer appends to after Milvus acked.

Why a stream next to Milvus: a standing query (the gateway's ``Watch``) must see each new
detection within a second of it becoming searchable. Polling Milvus for "rows newer than t"
misses upserted rows whose capture time is older than the poll cursor and loads the server with
repeated scans; a Redis stream gives every watcher the same ordered feed, from "now", with
blocking reads. Each entry carries the embedding (float32 bytes), so a watcher scores it without
asking Milvus. The stream is trimmed to ``maxlen`` entries (about 5 KB each): it is a feed, not
a store — Milvus stays the source of truth.

The feed also keeps a per-camera summary (detections written, first and last capture time) in a
Redis hash, which the gateway's ``ListCameras`` reads. Counts are of writes: an early-emitted
crop that is later replaced by its window's best crop counts once per write (the hash is a
dashboard figure; exact row counts come from Milvus).

Keys are namespaced by the Milvus alias, so two deployments sharing one Redis do not mix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from pedsearch.schema import DetectionRow

DEFAULT_MAXLEN = 20_000


def stream_key(alias: str) -> str:
    return f"pedsearch:{alias}:indexed"


def cameras_key(alias: str) -> str:
    return f"pedsearch:{alias}:cameras"


@dataclass
class LiveDetection:
    """One entry of the feed; ``embedding`` is ``(D,)`` float32, ``attributes`` ``(A,)``."""

    entry_id: str
    row: DetectionRow


#: KEYS[1] the camera hash; ARGV (camera, count, first, last) per camera: add the count, keep
#: the smallest first and the largest last capture time
_SUMMARISE = """
for i = 1, #ARGV, 4 do
  local cam = ARGV[i]
  redis.call('HINCRBY', KEYS[1], cam .. ':count', ARGV[i + 1])
  local first = redis.call('HGET', KEYS[1], cam .. ':first')
  if not first or tonumber(ARGV[i + 2]) < tonumber(first) then
    redis.call('HSET', KEYS[1], cam .. ':first', ARGV[i + 2])
  end
  local last = redis.call('HGET', KEYS[1], cam .. ':last')
  if not last or tonumber(ARGV[i + 3]) > tonumber(last) then
    redis.call('HSET', KEYS[1], cam .. ':last', ARGV[i + 3])
  end
end
return 1
"""


def _encode(row: DetectionRow) -> dict[str, bytes | str | int | float]:
    return {
        "id": int(row.id), "camera_id": row.camera_id, "ts_us": int(row.ts_us),
        "track_id": int(row.track_id), "frame_seq": int(row.frame_seq),
        "box": json.dumps([float(v) for v in row.box]), "det_score": float(row.det_score),
        "crop_ref": row.crop_ref, "model_version": row.model_version,
        "embedding": np.asarray(row.embedding, np.float32).tobytes(),
        "attributes": np.asarray(row.attributes, np.float32).tobytes(),
    }


def _decode(fields: dict[bytes, bytes]) -> DetectionRow:
    f = {k.decode(): v for k, v in fields.items()}
    return DetectionRow(
        id=int(f["id"]), camera_id=f["camera_id"].decode(), ts_us=int(f["ts_us"]),
        track_id=int(f["track_id"]), frame_seq=int(f["frame_seq"]),
        box=tuple(json.loads(f["box"])), det_score=float(f["det_score"]),
        crop_ref=f["crop_ref"].decode(), model_version=f["model_version"].decode(),
        embedding=np.frombuffer(f["embedding"], np.float32),
        attributes=np.frombuffer(f["attributes"], np.float32),
    )


class LiveFeed:
    """Appends to and reads from the feed of one alias.

    Args:
        redis_client: a ``redis.Redis`` (bytes responses, i.e. ``decode_responses=False``).
        alias: the Milvus alias the detections are searchable under.
        maxlen: approximate length the stream is trimmed to.
    """

    def __init__(self, redis_client, alias: str, maxlen: int = DEFAULT_MAXLEN) -> None:
        self.redis = redis_client
        self.alias = alias
        self.maxlen = maxlen
        self.key = stream_key(alias)
        self._summarise = redis_client.register_script(_SUMMARISE)

    def publish(self, rows: Sequence[DetectionRow]) -> None:
        """Append rows (call only after Milvus acknowledged them) and update the camera summary."""
        if not rows:
            return
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:
            pipe.xadd(self.key, _encode(row), maxlen=self.maxlen, approximate=True)
        by_cam: dict[str, list[int]] = {}
        for row in rows:
            by_cam.setdefault(row.camera_id, []).append(int(row.ts_us))
        args: list[int | str] = []
        for cam, ts in by_cam.items():
            args += [cam, len(ts), min(ts), max(ts)]
        # count, first (min) and last (max) in one server-side step: several indexers publish
        # at once, and a read-modify-write from here could let an older span win
        self._summarise(keys=[cameras_key(self.alias)], args=args, client=pipe)
        pipe.execute()

    def cameras(self) -> dict[str, dict[str, int]]:
        """``{camera_id: {"count", "first", "last"}}`` of everything published so far."""
        raw = self.redis.hgetall(cameras_key(self.alias))
        out: dict[str, dict[str, int]] = {}
        for k, v in raw.items():
            cam, _, what = k.decode().rpartition(":")
            out.setdefault(cam, {})[what] = int(v)
        return out

    def tail_id(self) -> str:
        """Id of the newest entry ("0-0" when empty): read from here to see only new entries."""
        info = self.redis.xinfo_stream(self.key) if self.redis.exists(self.key) else None
        return info["last-generated-id"].decode() if info else "0-0"

    def read(self, after: str, *, block_ms: int = 1000,
             count: int = 256) -> Iterator[LiveDetection]:
        """Entries after ``after`` (an entry id), waiting up to ``block_ms`` for the first one."""
        res = self.redis.xread({self.key: after}, count=count, block=block_ms)
        for _key, entries in res or []:
            for entry_id, fields in entries:
                yield LiveDetection(entry_id=entry_id.decode(), row=_decode(fields))
