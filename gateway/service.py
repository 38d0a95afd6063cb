"""The ``pedsearch.v1.Search`` servicer: checked requests -> query core -> responses.

Handlers raise pedsearch errors; the interceptor (:mod:`gateway.interceptor`) turns them into
status codes. Every request is fully checked (:mod:`gateway.convert`) before Milvus is asked, so
bad input is INVALID_ARGUMENT even while Milvus is down. Deadlines: the time the caller has left
bounds every Milvus call (``min(remaining, milvus.timeout_s)``), and a request whose deadline
has passed is answered DEADLINE_EXCEEDED without further work.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Callable, Iterator, Sequence

import grpc
import numpy as np
import redis
from pymilvus.exceptions import MilvusException

from gateway.convert import (
    FilterParams,
    add_hits,
    decode_image,
    detection_proto,
    finite,
    hit_proto,
    parse_constraints,
    parse_filter,
    skip_tracks,
    top_k,
    watch_duration,
    watch_filter,
)
from gateway.search import Constraint, Searcher, TextQuery, no_index
from gateway.status import WATCH_DURATION_KEY, WATCH_MAX_KEY, DeadlineExceeded
from gateway.watch import Heartbeat, WatchQuery, WatchSlots, run_watch
from pedsearch.bundle import Bundle
from pedsearch.config import Settings
from pedsearch.cropstore import CropStore
from pedsearch.errors import InvalidInput, NotFound, NotReady, PedsearchError, Unavailable
from pedsearch.live import LiveFeed
from pedsearch.schema import collection_name, connect, version_of_collection
from pedsearch.v1 import search_pb2, search_pb2_grpc

log = logging.getLogger("pedsearch.gateway")

#: a score threshold outside this cannot be meant (cosine in [-1, 1] plus the soft bonus)
MAX_ABS_THRESHOLD = 100.0


class Deadline:
    """The caller's deadline of one RPC."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self.context = context

    def remaining(self) -> float | None:
        """Seconds left; ``None`` without a deadline.

        Raises:
            DeadlineExceeded: no time is left.
        """
        left = self.context.time_remaining()
        if left is None or left > 1e7:  # grpc reports "no deadline" as a far-away one
            return None
        if left <= 0:
            raise DeadlineExceeded("the request's deadline passed before the answer was ready; "
                                   "set a longer deadline")
        return left

    def guard(self, exc: PedsearchError) -> PedsearchError:
        """A failed Milvus call as DEADLINE_EXCEEDED if the deadline is what ended it."""
        left = self.context.time_remaining()
        if left is not None and left <= 0.001:
            return DeadlineExceeded(f"the request's deadline passed: {exc.message}")
        return exc


def not_held(alias: str, name: str, held) -> NotReady:
    """The alias points at ``name``, a collection of a version this gateway holds no bundle of."""
    return NotReady(f"alias {alias!r} points at {name}, a model version this gateway holds no "
                    f"bundle of (it holds {', '.join(held)}); stage its bundle with `pedsearch "
                    "rollout --no-switch --bundle DIR` (gateways load it within seconds), "
                    "restart the gateway with it (--bundle), or switch the alias back")


class MilvusLink:
    """A Milvus client made on first use and again after a failed connect (Milvus may start
    after the gateway), shared by all requests, with one :class:`Searcher` per model version
    the gateway holds.

    Args:
        settings: the deployment configuration.
        bundle: the primary bundle (``model.bundle``), or ``None`` if it failed to load.
        extra: further bundles (``gateway.bundles``) of other model versions.
    """

    def __init__(self, settings: Settings, bundle: Bundle | None,
                 extra: Sequence[Bundle] = ()) -> None:
        self.settings = settings
        self.bundle = bundle
        #: version -> bundle, the primary first
        self.bundles: dict[str, Bundle] = {b.version: b for b in (bundle, *extra) if b}
        self._searchers: dict[str, Searcher] = {}
        self._encoders: dict[str, Searcher] = {}  # version -> query encoders without Milvus
        self._client = None
        self._lock = threading.Lock()
        # connecting waits for Milvus (up to milvus.timeout_s, which pymilvus also keeps for
        # its later reconnects): one connect at a time runs on a thread of its own, and each
        # request waits for it no longer than its deadline; requests that need only the
        # encoders (and bad ones) are answered meanwhile
        self._connect_lock = threading.Lock()
        self._connecting: concurrent.futures.Future | None = None
        self._connector = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="milvus-connect")

    def searcher(self, version: str | None = None, *, timeout_s: float | None = None
                 ) -> Searcher:
        """The searcher of ``version`` (default: the primary bundle's).

        Args:
            timeout_s: the request's time left: connecting to Milvus waits no longer.

        Raises:
            Unavailable: Milvus cannot be reached, or ``version`` was dropped meanwhile (a
                roll-out unstaged it). NotReady: no bundle is loaded.
        """
        if self.bundle is None:
            raise NotReady("no model bundle is loaded")
        client = self._connected(timeout_s)
        return self._cached(self._searchers, version,
                            lambda bundle: self._new_searcher(bundle, client))

    def _connected(self, timeout_s: float | None):
        """The Milvus client, connecting first if there is none yet (waiting at most
        ``timeout_s``; the connect goes on for the requests after it)."""
        client = self._client
        if client is not None:
            return client
        with self._connect_lock:
            job = self._connecting
            if job is None or (job.done() and job.exception() is not None):
                job = self._connecting = self._connector.submit(connect, self.settings.milvus)
        try:
            client = job.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise Unavailable(f"Milvus at {self.settings.milvus.uri} did not answer within the "
                              "request's deadline; retry") from None
        with self._connect_lock:
            if self._client is None and self._connecting is job:
                self._client = client
            return self._client or client

    def encoder(self, version: str | None = None) -> Searcher:
        """The query encoders of ``version`` (default: the primary bundle's): they need the
        bundle, not Milvus, so this is a searcher without a live client.

        Raises:
            NotReady: no bundle is loaded. Unavailable: ``version`` was dropped meanwhile.
        """
        def make(bundle: Bundle) -> Searcher:
            enc = self._new_searcher(bundle, None)
            w = enc.text_attribute_weight
            log.info("model version %s ranks text queries by %s", bundle.version,
                     f"latent + attribute similarity (CMAAM Eq. 19, weight {w:g})" if w > 0
                     else "the joint embedding's cosine alone")
            return enc

        return self._cached(self._encoders, version, make)

    def _new_searcher(self, bundle: Bundle, client) -> Searcher:
        return Searcher(client=client, cfg=self.settings.milvus, bundle=bundle,
                        text_attribute_weight=self.settings.gateway.text_attribute_weight)

    def _cached(self, cache: dict[str, Searcher], version: str | None,
                make: Callable[[Bundle], Searcher]) -> Searcher:
        """``cache[version]``, made by ``make(bundle)`` (under the lock) on first use."""
        if self.bundle is None:
            raise NotReady("no model bundle is loaded")
        version = version or self.bundle.version
        with self._lock:
            found = cache.get(version)
            if found is None:
                bundle = self.bundles.get(version)
                if bundle is None:  # dropped between the routing and now
                    raise Unavailable(f"model version {version} was just dropped by this "
                                      "gateway; retry")
                found = cache[version] = make(bundle)
            return found

    def hold(self, bundle: Bundle) -> None:
        """Answer with ``bundle``'s version too (a bundle a roll-out staged)."""
        with self._lock:
            # a new dict, never one changed in place: requests iterate the one they read
            self.bundles = {**self.bundles, bundle.version: bundle}

    def drop(self, version: str) -> None:
        """Stop holding ``version`` (never the primary's)."""
        if self.bundle is not None and version == self.bundle.version:
            raise ValueError("the primary bundle cannot be dropped")
        with self._lock:
            self.bundles = {v: b for v, b in self.bundles.items() if v != version}
            self._searchers.pop(version, None)
            self._encoders.pop(version, None)

    def version_of(self, name: str) -> str | None:
        """The held model version whose collection is ``name``, if any."""
        for version in self.bundles:
            if collection_name(self.settings.milvus, version) == name:
                return version
        return None

    def route(self, *, timeout_s: float | None = None) -> tuple[Searcher, str]:
        """The searcher of the model version the alias points at now, and its collection.

        The alias is resolved once (through the primary searcher's short cache): a roll-out
        that moves it is followed by the next requests, each answered whole by one version.

        Raises:
            NotReady: no alias yet, or it points at a version this gateway holds no bundle of.
            Unavailable: Milvus cannot be reached.
        """
        primary = self.searcher(timeout_s=timeout_s)
        name = primary.resolve_alias(timeout_s=timeout_s)
        if name is None:
            raise no_index(self.settings.milvus)
        version = self.version_of(name)
        if version is not None:
            return self.searcher(version, timeout_s=timeout_s), name
        raise not_held(self.settings.milvus.alias, name, self.bundles)

    def ping(self, timeout_s: float = 2.0) -> bool:
        """Whether Milvus answers now."""
        try:
            self.searcher(timeout_s=timeout_s).client.get_server_version(timeout=timeout_s)
            return True
        except (PedsearchError, MilvusException):
            return False
        except Exception as exc:  # noqa: BLE001 -- a probe reports, it never raises
            log.debug("Milvus probe failed: %s", exc)
            return False

    def close(self) -> None:
        with self._connect_lock:
            self._connecting = None
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                except Exception:  # noqa: BLE001 -- closing a dead connection
                    pass
                self._client = None
                self._searchers.clear()


class SearchService(search_pb2_grpc.SearchServicer):
    """The Search service over one loaded bundle.

    Args:
        settings: the deployment configuration (milvus, redis, paths, gateway).
        bundle: the loaded bundle (parts image, text, attributes), or ``None`` if loading it
            failed -- then every RPC answers FAILED_PRECONDITION with ``bundle_error``.
        bundle_error: why no bundle is loaded.
        stopping: set when the server shuts down; open watches end.
    """

    def __init__(self, *, settings: Settings, bundle: Bundle | None,
                 bundle_error: str | None = None, stopping: threading.Event,
                 extra_bundles: Sequence[Bundle] = ()) -> None:
        self.settings = settings
        self.cfg = settings.gateway
        self.bundle = bundle
        self.bundle_error = bundle_error or "no model bundle is loaded"
        self.milvus = MilvusLink(settings, bundle, extra_bundles)
        self.crops = CropStore(settings.paths.crops_dir)
        # XREAD blocks up to a second: the socket timeout must exceed it
        self.redis = redis.Redis.from_url(settings.redis.url, socket_timeout=5.0,
                                          socket_connect_timeout=2.0)
        self.feed = LiveFeed(self.redis, settings.milvus.alias)
        self.watches = WatchSlots(self.cfg.max_watches)
        self.stopping = stopping

    def close(self) -> None:
        self.milvus.close()
        self.redis.close()

    # -- helpers ---------------------------------------------------------------------------------
    def _bundle(self) -> Bundle:
        if self.bundle is None:
            raise NotReady(f"no model bundle is loaded: {self.bundle_error}")
        return self.bundle

    def _search(self, context,
                encode: Callable[[Searcher, list[Constraint]], np.ndarray | TextQuery], *,
                k: int, flt: FilterParams, constraint_protos) -> search_pb2.SearchResponse:
        """Check, encode and search one query in the space of the version the alias points at.

        ``encode(searcher, constraints)`` turns the request into its ``(D,)`` or ``(A, D)``
        query vector, or a text query's :class:`TextQuery`, with that searcher's bundle. The
        query is encoded once, by the version the alias points at. When Milvus cannot say
        which (down, or no index yet), the request is still checked and encoded with the
        primary bundle before that error is answered, so bad input is INVALID_ARGUMENT
        whatever state Milvus is in.
        """
        bundle = self._bundle()
        constraints = parse_constraints(bundle.schema, constraint_protos, unspecified="soft")
        deadline = Deadline(context)
        deadline.remaining()
        try:
            searcher, name = self.milvus.route(timeout_s=deadline.remaining())
        except PedsearchError as exc:
            encode(self.milvus.encoder(), constraints)  # bad input first, then Milvus' state
            raise deadline.guard(exc) if isinstance(exc, Unavailable) else exc from None
        if searcher.bundle is not bundle:  # a roll-out: the alias is on another held version
            bundle = searcher.bundle
            constraints = parse_constraints(bundle.schema, constraint_protos, unspecified="soft")
        t0 = time.perf_counter()
        query = encode(self.milvus.encoder(bundle.version), constraints)
        encode_ms = (time.perf_counter() - t0) * 1000
        try:
            t0 = time.perf_counter()
            hits = searcher.search_vector(
                query, k=k, cameras=flt.cameras, since_us=flt.since_us, until_us=flt.until_us,
                constraints=constraints, min_score=flt.min_score,
                soft_weight=self.cfg.soft_weight, rerank_factor=self.cfg.rerank_factor,
                collection=name, timeout_s=deadline.remaining(),
            )
        except Unavailable as exc:
            raise deadline.guard(exc) from exc
        search_ms = (time.perf_counter() - t0) * 1000
        reply = search_pb2.SearchResponse(model_version=bundle.version, collection=name,
                                          encode_ms=encode_ms, search_ms=search_ms)
        add_hits(reply.hits, hits, bundle.schema)
        return reply

    # -- RPCs ------------------------------------------------------------------------------------
    def SearchText(self, request, context):
        self._bundle()
        k = top_k(request.top_k)
        flt = parse_filter(request.filter)
        return self._search(context, lambda enc, _c: enc.encode_text(request.text), k=k,
                            flt=flt, constraint_protos=request.constraints)

    def SearchAttributes(self, request, context):
        self._bundle()
        k = top_k(request.top_k)
        flt = parse_filter(request.filter)
        if not request.constraints:
            raise InvalidInput("SearchAttributes needs at least one attribute constraint, e.g. "
                               "{family: 'upper_color', values: ['red']}")
        return self._search(context, lambda enc, c: enc.encode_constraints(c), k=k, flt=flt,
                            constraint_protos=request.constraints)

    def SearchImage(self, request, context):
        self._bundle()
        k = top_k(request.top_k)
        flt = parse_filter(request.filter)
        image = decode_image(request.image)
        return self._search(context, lambda enc, _c: enc.encode_image(image), k=k, flt=flt,
                            constraint_protos=request.constraints)

    def GetDetection(self, request, context):
        self._bundle()
        deadline = Deadline(context)
        try:
            searcher, name = self.milvus.route(timeout_s=deadline.remaining())
            bundle = searcher.bundle
            hit = searcher.get(request.id, collection=name, timeout_s=deadline.remaining())
        except Unavailable as exc:
            raise deadline.guard(exc) from exc
        crop = b""
        if request.include_crop:
            try:
                crop = self.crops.get(hit.crop_ref)
            except (NotFound, InvalidInput) as exc:
                raise NotFound(f"detection {request.id} exists but its crop is missing: "
                               f"{exc.message}") from None
            except NotReady as exc:  # there but unreadable: FAILED_PRECONDITION, not INTERNAL
                raise NotReady(f"detection {request.id} exists but its crop cannot be read: "
                               f"{exc.message}") from None
        return search_pb2.GetDetectionResponse(detection=detection_proto(hit, bundle.schema),
                                               crop_jpeg=crop)

    def ListCameras(self, request, context):
        version = self._bundle().version
        deadline = Deadline(context)
        deadline.remaining()
        try:
            cams = self.feed.cameras()
        except redis.RedisError as exc:
            raise Unavailable(f"Redis at {self.settings.redis.url} cannot be read: {exc}") from exc
        try:  # the version that answers searches now: the one the alias points at
            left = deadline.remaining()
            name = self.milvus.searcher(timeout_s=left).resolve_alias(timeout_s=left)
            version = version_of_collection(self.settings.milvus, name or "") or version
        except Unavailable:
            pass  # Milvus down: the cameras are still worth listing
        return search_pb2.ListCamerasResponse(
            cameras=[search_pb2.CameraInfo(camera_id=cam, detections=max(0, v.get("count", 0)),
                                           first_ts_us=v.get("first", 0),
                                           last_ts_us=v.get("last", 0))
                     for cam, v in sorted(cams.items())],
            model_version=version,
        )

    def Watch(self, request, context) -> Iterator[search_pb2.WatchEvent]:
        bundle = self._bundle()
        query = self._watch_query(request, bundle)
        release = self.watches.acquire()
        context.add_callback(release)  # frees the slot even if the generator is never resumed
        # how long it runs, and the cap a longer max_duration_s was cut to: the client can say
        # so when the stream ends (otherwise an end at the duration looks like a dropped watch)
        context.send_initial_metadata(((WATCH_DURATION_KEY, str(int(query.duration_s))),
                                       (WATCH_MAX_KEY, str(self.cfg.watch_max_s))))
        try:
            events = run_watch(query, feed=self.feed, schema=bundle.schema,
                               is_active=context.is_active, stopping=self.stopping,
                               heartbeat_s=self.cfg.watch_heartbeat_s)
            for event in events:
                if isinstance(event, Heartbeat):
                    yield search_pb2.WatchEvent(heartbeat=search_pb2.Heartbeat(
                        server_ts_us=event.server_ts_us, scanned=event.scanned))
                else:
                    yield search_pb2.WatchEvent(match=hit_proto(event, bundle.schema))
        finally:
            release()

    def _watch_query(self, request, bundle: Bundle) -> WatchQuery:
        kind = request.WhichOneof("query")
        if kind is None:
            raise InvalidInput("Watch needs a query: set text, attributes or image")
        threshold = finite(request.threshold, "threshold", low=-MAX_ABS_THRESHOLD,
                           high=MAX_ABS_THRESHOLD)
        now_us = int(time.time() * 1e6)
        flt = watch_filter(request.filter, now_us)
        duration = watch_duration(request.max_duration_s, flt, now_us,
                                  default_s=self.cfg.watch_default_s, cap_s=self.cfg.watch_max_s)
        constraints: list[Constraint] = []
        if kind == "text":
            def encode(enc: Searcher) -> np.ndarray | TextQuery:
                return enc.encode_text(request.text)
        elif kind == "image":
            image = decode_image(request.image)

            def encode(enc: Searcher) -> np.ndarray:
                return enc.encode_image(image)
        else:
            if not request.attributes.constraints:
                raise InvalidInput("Watch.attributes needs at least one attribute constraint")
            constraints = parse_constraints(bundle.schema, request.attributes.constraints,
                                            unspecified="soft")

            def encode(enc: Searcher) -> np.ndarray:
                return enc.encode_constraints(constraints)
        vector = encode(self.milvus.encoder())

        def encode_other(version: str) -> np.ndarray | TextQuery | None:
            # a version held now (also one loaded after the watch began), in its own space; the
            # constraints and the hits' attribute fields are the primary bundle's, so only
            # versions of the same schema can be matched
            other = self.milvus.bundles.get(version)
            if other is None or other.schema != bundle.schema:
                return None
            try:
                return encode(self.milvus.encoder(version))
            except Unavailable:  # dropped meanwhile
                return None

        skip = skip_tracks(request.skip_tracks)
        self._check_watch_version()
        return WatchQuery(vector=vector, model_version=bundle.version, threshold=threshold,
                          filter=flt, constraints=constraints, max_matches=request.max_matches,
                          duration_s=float(duration), soft_weight=self.cfg.soft_weight,
                          encode_other=encode_other, skip_tracks=skip)

    def _check_watch_version(self) -> None:
        """A watch may start before anything is indexed (or while Milvus is down: it reads the
        feed in Redis), but not against an index of a version the gateway holds no bundle of."""
        try:
            name = self.milvus.searcher(timeout_s=2.0).resolve_alias(timeout_s=2.0)
        except Unavailable:
            return
        if name is not None and self.milvus.version_of(name) is None:
            raise not_held(self.settings.milvus.alias, name, self.milvus.bundles)
