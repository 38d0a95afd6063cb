"""A small typed client of the gateway's ``pedsearch.v1.Search`` service.

Everything a caller gets back is a plain dataclass (:class:`Hit`, :class:`Detection`,
:class:`SearchResult`, :class:`Camera`, :class:`Heartbeat`), and every gRPC failure is raised as
one of pedsearch's own errors with a message that says what to do: INVALID_ARGUMENT ->
:class:`~pedsearch.errors.InvalidInput`, NOT_FOUND -> :class:`~pedsearch.errors.NotFound`,
FAILED_PRECONDITION -> :class:`~pedsearch.errors.NotReady`, UNAVAILABLE ->
:class:`~pedsearch.errors.Unavailable` (a gateway that cannot be reached at all says how to start
one), UNAUTHENTICATED / PERMISSION_DENIED -> :class:`~pedsearch.errors.Unauthenticated` /
:class:`~pedsearch.errors.PermissionDenied` (both an ``AccessDenied``), RESOURCE_EXHAUSTED ->
:class:`~pedsearch.errors.ResourceExhausted`, DEADLINE_EXCEEDED ->
:class:`~pedsearch.errors.DeadlineExceeded` -- the classes the gateway raises itself. The
original status code is kept on the error as ``status``.

Example::

    from gateway.client import connect

    with connect("127.0.0.1:50051") as gw:
        result = gw.search_text("a man in a grey hoodie with a red backpack", k=5)
        for hit in result.hits:
            print(hit.score, hit.detection.camera_id, hit.detection.ts_us)
        crop_jpeg = gw.get_detection(result.hits[0].detection.id, include_crop=True).crop_jpeg

gRPC Python sets no deadline by itself: every unary call here carries one (``timeout_s``).
"""

from __future__ import annotations

import contextlib
import pathlib
import threading
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import grpc

from gateway.status import (
    MAX_IMAGE_BYTES,
    ORIGIN_GATEWAY,
    ORIGIN_KEY,
    WATCH_DURATION_KEY,
    WATCH_MAX_KEY,
)
from pedsearch.errors import (
    DeadlineExceeded,
    InvalidInput,
    NotFound,
    NotReady,
    PedsearchError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from pedsearch.v1 import frame_pb2, search_pb2, search_pb2_grpc

#: seconds a unary call may take unless the caller says otherwise
DEFAULT_TIMEOUT_S = 30.0
#: seconds :func:`connect` waits for the channel to come up before saying the gateway is down
CONNECT_TIMEOUT_S = 5.0
MODES = {"soft": search_pb2.AttributeConstraint.SOFT, "hard": search_pb2.AttributeConstraint.HARD}


# -- what the gateway returns ----------------------------------------------------------------------
@dataclass(frozen=True)
class Detection:
    """One stored pedestrian: where, when, which track, and its attribute probabilities."""

    id: int
    camera_id: str
    ts_us: int
    track_id: int
    box: tuple[float, float, float, float]  # x, y, w, h in pixels of the full frame
    det_score: float
    crop_ref: str
    model_version: str
    frame_seq: int
    attributes: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, d: frame_pb2.Detection) -> "Detection":
        return cls(id=d.id, camera_id=d.camera_id, ts_us=d.ts_us, track_id=d.track_id,
                   box=(d.box.x, d.box.y, d.box.w, d.box.h), det_score=d.det_score,
                   crop_ref=d.crop_ref, model_version=d.model_version, frame_seq=d.frame_seq,
                   attributes=dict(d.attributes))

    def top_attributes(self, n: int = 3, min_p: float = 0.5) -> list[tuple[str, float]]:
        """The ``n`` most probable attributes with probability >= ``min_p``, best first."""
        ranked = sorted(self.attributes.items(), key=lambda kv: -kv[1])
        return [(_attribute_label(k), p) for k, p in ranked if p >= min_p][:n]


@dataclass(frozen=True)
class Hit:
    score: float
    detection: Detection


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    model_version: str
    collection: str
    encode_ms: float
    search_ms: float

    @classmethod
    def from_proto(cls, r: search_pb2.SearchResponse) -> "SearchResult":
        return cls(hits=[_hit(h) for h in r.hits], model_version=r.model_version,
                   collection=r.collection, encode_ms=r.encode_ms, search_ms=r.search_ms)


@dataclass(frozen=True)
class DetectionWithCrop:
    detection: Detection
    crop_jpeg: bytes  # empty unless asked for


@dataclass(frozen=True)
class Camera:
    camera_id: str
    detections: int
    first_ts_us: int
    last_ts_us: int


@dataclass(frozen=True)
class Heartbeat:
    """The standing query is alive; ``scanned`` detections were checked since it began."""

    server_ts_us: int
    scanned: int


@dataclass(frozen=True)
class Constraint:
    """One attribute family and the values accepted for it (any of them).

    ``mode`` is ``"soft"`` (re-rank; for an attribute search, part of the query) or ``"hard"``
    (filter: only hits with probability >= ``min_probability``, the gateway's default 0.5).
    """

    family: str
    values: tuple[str, ...]
    mode: str = "soft"
    min_probability: float | None = None

    def to_proto(self) -> search_pb2.AttributeConstraint:
        if self.mode not in MODES:
            raise InvalidInput(f"attribute mode must be soft or hard, got {self.mode!r}")
        c = search_pb2.AttributeConstraint(family=self.family, values=list(self.values),
                                           mode=MODES[self.mode])
        if self.min_probability is not None:
            c.min_probability = self.min_probability
        return c


def parse_constraint(text: str, mode: str = "soft") -> Constraint:
    """``"upper_color=red"`` or ``"upper_color=red,blue"`` -> :class:`Constraint`.

    Only the shape is checked here; the gateway knows the bundle's families and values.
    """
    family, sep, values = text.partition("=")
    family = family.strip()
    vals = tuple(v.strip() for v in values.split(",") if v.strip())
    if not sep or not family or not vals:
        raise InvalidInput(f"attribute {text!r} must look like family=value (e.g. "
                           "upper_color=red or backpack=yes; several values: "
                           "footwear=boots,sneakers)")
    return Constraint(family=family, values=vals, mode=mode)


def constraints_of(attributes: Mapping[str, str | Sequence[str]] | Sequence[Constraint] | None,
                   mode: str = "soft") -> list[Constraint]:
    """A ``{family: value(s)}`` mapping (each gets ``mode``) or a list of :class:`Constraint`
    (each keeps its own mode) -> constraints."""
    if not attributes:
        return []
    if isinstance(attributes, Mapping):
        return [Constraint(family=f, values=(v,) if isinstance(v, str) else tuple(v), mode=mode)
                for f, v in attributes.items()]
    return list(attributes)


# -- the client ------------------------------------------------------------------------------------
class GatewayClient:
    """Typed calls over one channel to a gateway. Build it with :func:`connect`.

    Args:
        channel: an open gRPC channel to the gateway.
        address: where it points (for messages).
        token: bearer token sent as ``authorization: Bearer <token>`` metadata, or None.
        timeout_s: deadline of each unary call.
    """

    def __init__(self, *, channel: grpc.Channel, address: str, token: str | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.channel = channel
        self.address = address
        self.timeout_s = timeout_s
        self.stub = search_pb2_grpc.SearchStub(channel)
        token = clean_token(token)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    # context manager so scripts close the channel
    def __enter__(self) -> "GatewayClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    # -- searches ----------------------------------------------------------------------------------
    def search_text(self, text: str, *, k: int = 10, cameras: Sequence[str] = (),
                    since_us: int | None = None, until_us: int | None = None,
                    min_score: float | None = None,
                    attributes: Mapping | Sequence[Constraint] | None = None,
                    mode: str = "soft") -> SearchResult:
        """Free-text query; ``attributes`` re-rank (soft) or filter (hard) its hits."""
        with _building("SearchText"):
            req = search_pb2.SearchTextRequest(
                text=text, top_k=k, filter=_filter(cameras, since_us, until_us, min_score),
                constraints=[c.to_proto() for c in constraints_of(attributes, mode)])
        return SearchResult.from_proto(self._call(self.stub.SearchText, req))

    def search_attributes(self, attributes: Mapping | Sequence[Constraint], *, k: int = 10,
                          cameras: Sequence[str] = (), since_us: int | None = None,
                          until_us: int | None = None, min_score: float | None = None,
                          mode: str = "soft") -> SearchResult:
        """Attribute query, e.g. ``{"upper_color": "red", "backpack": "yes"}``; ``mode="hard"``
        also filters the hits on those attributes."""
        with _building("SearchAttributes"):
            req = search_pb2.SearchAttributesRequest(
                constraints=[c.to_proto() for c in constraints_of(attributes, mode)], top_k=k,
                filter=_filter(cameras, since_us, until_us, min_score))
        return SearchResult.from_proto(self._call(self.stub.SearchAttributes, req))

    def search_image(self, image: bytes | str | pathlib.Path, *, k: int = 10,
                     cameras: Sequence[str] = (), since_us: int | None = None,
                     until_us: int | None = None, min_score: float | None = None,
                     attributes: Mapping | Sequence[Constraint] | None = None,
                     mode: str = "soft") -> SearchResult:
        """Query by an example crop: JPEG/PNG bytes or the path of such a file."""
        image = _image_bytes(image)
        with _building("SearchImage"):
            req = search_pb2.SearchImageRequest(
                image=image, top_k=k, filter=_filter(cameras, since_us, until_us, min_score),
                constraints=[c.to_proto() for c in constraints_of(attributes, mode)])
        return SearchResult.from_proto(self._call(self.stub.SearchImage, req))

    # -- lookups -----------------------------------------------------------------------------------
    def get_detection(self, detection_id: int, *, include_crop: bool = False) -> DetectionWithCrop:
        with _building("GetDetection"):
            req = search_pb2.GetDetectionRequest(id=detection_id, include_crop=include_crop)
        resp = self._call(self.stub.GetDetection, req)
        return DetectionWithCrop(detection=Detection.from_proto(resp.detection),
                                 crop_jpeg=bytes(resp.crop_jpeg))

    def list_cameras(self) -> tuple[list[Camera], str]:
        """The cameras with stored detections, and the model version of the index."""
        resp = self._call(self.stub.ListCameras, search_pb2.ListCamerasRequest())
        cams = [Camera(camera_id=c.camera_id, detections=c.detections,
                       first_ts_us=c.first_ts_us, last_ts_us=c.last_ts_us) for c in resp.cameras]
        return cams, resp.model_version

    # -- standing query ----------------------------------------------------------------------------
    def watch(self, text: str | None = None, *,
              attributes: Mapping | Sequence[Constraint] | None = None, mode: str = "soft",
              image: bytes | str | pathlib.Path | None = None,
              threshold: float, cameras: Sequence[str] = (), since_us: int | None = None,
              until_us: int | None = None, max_matches: int = 0,
              max_duration_s: int = 0,
              skip_tracks: Sequence[tuple[str, int]] = ()) -> "WatchStream":
        """Start a standing query: a text, attributes, or an example crop of the person
        (``image``: JPEG/PNG bytes or a file's path; matches are that person appearing again).
        ``skip_tracks``: ``(camera_id, track_id)`` pairs never reported (the example's own
        track, whose later crops would match it).

        ``max_duration_s``: seconds the watch runs; 0 takes the gateway's default
        (``gateway.watch_default_s``, 600), and the gateway cuts a longer one to its
        ``gateway.watch_max_s`` (3600 by default): the stream's ``duration_s`` says what it got.

        Returns a :class:`WatchStream`: iterate it for :class:`Hit` (a new match) and
        :class:`Heartbeat` events; ``cancel()`` (or leaving a ``with`` block) ends it. It ends by
        itself after ``max_matches`` or when its duration runs out.
        """
        with _building("Watch"):
            req = search_pb2.WatchRequest(threshold=threshold, max_matches=max_matches,
                                          max_duration_s=max_duration_s,
                                          filter=_filter(cameras, since_us, until_us, None),
                                          skip_tracks=[search_pb2.TrackRef(camera_id=c,
                                                                           track_id=t)
                                                       for c, t in skip_tracks])
        if sum((text is not None, bool(attributes), image is not None)) > 1:
            raise InvalidInput("a watch is a text query, an attribute query or an image query: "
                               "give one of them")
        if text is not None:
            req.text = text
        elif attributes:
            req.attributes.constraints.extend(
                c.to_proto() for c in constraints_of(attributes, mode))
        elif image is not None:
            req.image = _image_bytes(image)
        else:
            raise InvalidInput("a watch needs a text, at least one attribute or an image")
        # no deadline: the server bounds the stream by max_duration_s; the caller cancels
        call = self.stub.Watch(req, metadata=self._metadata)
        return WatchStream(call, self)

    # -- plumbing ----------------------------------------------------------------------------------
    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from None


def _image_bytes(image: bytes | str | pathlib.Path) -> bytes:
    """A query image's bytes (read from a path), checked against the gateway's size limit."""
    if not isinstance(image, bytes):
        path = pathlib.Path(image)
        try:
            image = path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read the query image {path}: {exc.strerror}") from None
    if len(image) > MAX_IMAGE_BYTES:
        raise InvalidInput(f"the query image has {len(image) / 2**20:.1f} MiB; at most "
                           f"{MAX_IMAGE_BYTES // 2**20} MiB (a crop of one person is far "
                           "smaller: crop or shrink it)")
    return image


class WatchStream:
    """The events of one standing query: :class:`Hit` or :class:`Heartbeat`, as they come."""

    def __init__(self, call, client: GatewayClient) -> None:
        self._call = call
        self._client = client
        self._cancelled = threading.Event()

    def __iter__(self) -> Iterator[Hit | Heartbeat]:
        try:
            for ev in self._call:
                if ev.HasField("match"):
                    yield _hit(ev.match)
                elif ev.HasField("heartbeat"):
                    yield Heartbeat(server_ts_us=ev.heartbeat.server_ts_us,
                                    scanned=ev.heartbeat.scanned)
        except grpc.RpcError as exc:
            if self._cancelled.is_set() and exc.code() == grpc.StatusCode.CANCELLED:
                return  # we ended it ourselves
            raise error_from_rpc(exc, self._client.address) from None

    @property
    def duration_s(self) -> int | None:
        """Seconds the gateway lets this watch run (``max_duration_s``, or its default when
        that was 0, capped at :attr:`max_duration_s`); None from a gateway that does not say.
        Known once the first event arrived (until then, reading it waits for the gateway)."""
        return self._initial_int(WATCH_DURATION_KEY)

    @property
    def max_duration_s(self) -> int | None:
        """The longest watch the gateway allows (``gateway.watch_max_s``), or None."""
        return self._initial_int(WATCH_MAX_KEY)

    def _initial_int(self, key: str) -> int | None:
        try:
            metadata = self._call.initial_metadata() or ()
        except Exception:  # noqa: BLE001 -- a call without metadata (ended before any)
            return None
        for k, value in metadata:
            if k == key:
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    def cancel(self) -> None:
        """End the stream; an iteration in progress stops cleanly."""
        self._cancelled.set()
        self._call.cancel()

    def __enter__(self) -> "WatchStream":
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()


def connect(address: str, token: str | None = None, tls_ca: str | pathlib.Path | None = None, *,
            timeout_s: float = DEFAULT_TIMEOUT_S,
            connect_timeout_s: float = CONNECT_TIMEOUT_S) -> GatewayClient:
    """Open a channel to the gateway at ``host:port`` and wait until it is up.

    Args:
        address: ``host:port`` of the gateway.
        token: bearer token, when the gateway requires one (surrounding whitespace is dropped).
        tls_ca: PEM file of the CA (or the self-signed certificate) to trust; enables TLS.
        timeout_s: deadline of each unary call.
        connect_timeout_s: how long to wait for the gateway to answer before giving up.

    Raises:
        Unavailable: the gateway cannot be reached (the message says how to start one).
        InvalidInput: a malformed address (also one with a scheme such as ``http://``), a
            token a header cannot carry, or an unreadable CA file.
    """
    check_address(address)
    token = clean_token(token)  # before connecting: a bad token is the caller's to fix first
    if tls_ca is not None:
        try:
            ca = pathlib.Path(tls_ca).read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read the TLS CA file {tls_ca}: {exc.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in ca:
            raise InvalidInput(f"the TLS CA file {tls_ca} holds no PEM certificate: give the "
                               "CA (or the gateway's self-signed certificate) in PEM form")
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca))
    else:
        channel = grpc.insecure_channel(address)
    if _wait_connected(channel, connect_timeout_s) is not grpc.ChannelConnectivity.READY:
        channel.close()
        message = unreachable_message(address)
        if tls_ca is not None:
            message += (f"; or the TLS handshake failed: is {tls_ca} the CA that signed the "
                        "gateway's certificate, and does that certificate name this host?")
        raise Unavailable(message)
    return GatewayClient(channel=channel, address=address, token=token, timeout_s=timeout_s)


def check_address(address: str) -> str:
    """Raise :class:`InvalidInput` unless ``address`` is ``host:port``.

    ``http://host:port`` would pass the host:port shape (host ``http``, the rest after the last
    colon a port) and then fail to connect, reported as "cannot reach the gateway": the scheme
    is refused by name instead.
    """
    scheme, sep, _rest = address.partition("://")
    if sep:
        raise InvalidInput(f"gateway address {address!r} has a scheme ({scheme}://): give "
                           "HOST:PORT without http:// or grpc://, e.g. 127.0.0.1:50051 (TLS is "
                           "--tls-ca, not https://)")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidInput(f"gateway address {address!r} must be host:port, e.g. 127.0.0.1:50051")
    if not 0 < int(port) < 65536:
        raise InvalidInput(f"gateway address {address!r}: port {port} is not 1..65535")
    return address


def clean_token(token: str | None) -> str | None:
    """The bearer token without surrounding whitespace, or None when there is none.

    A token read from a file or pasted (``PEDSEARCH_TOKEN=$'s3cret\\n'``) may end in a newline,
    which gRPC refuses to put in a header before the call leaves the client -- reported only as
    INTERNAL "Invalid metadata". A header carries printable ASCII only, so anything else left
    is refused here, by position: the token is a secret and is not echoed.

    Raises:
        InvalidInput: the token holds a character a gRPC header cannot carry.
    """
    if token is None:
        return None
    token = token.strip()
    for i, ch in enumerate(token):
        if not " " <= ch <= "~":
            raise InvalidInput("the bearer token (--token or $PEDSEARCH_TOKEN) holds a character "
                               f"a gRPC header cannot carry ({_char_name(ch)} at position "
                               f"{i + 1}): a token is printable ASCII; check how it was read "
                               "or pasted")
    return token or None


def _char_name(ch: str) -> str:
    # the character itself may not print (a control character): name it by its code point
    return f"U+{ord(ch):04X}" + (f" {ch!r}" if ch.isprintable() else "")


def _wait_connected(channel: grpc.Channel, timeout_s: float) -> grpc.ChannelConnectivity | None:
    """READY, TRANSIENT_FAILURE (the first attempt failed: nobody listens) or None (timeout).

    ``channel_ready_future`` would keep retrying a refused connection until its timeout; an
    operator who forgot to start the gateway should hear so at once.
    """
    done = threading.Event()
    seen: list[grpc.ChannelConnectivity] = []

    def on_change(state: grpc.ChannelConnectivity) -> None:
        if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE):
            seen.append(state)
            done.set()

    channel.subscribe(on_change, try_to_connect=True)
    try:
        done.wait(timeout_s)
    finally:
        channel.unsubscribe(on_change)
    return seen[0] if seen else None


def unreachable_message(address: str) -> str:
    return (f"cannot reach the gateway at {address}: start it with `pedsearch gateway serve` "
            "(or pass --gateway HOST:PORT; a gateway that serves TLS needs --tls-ca)")


def error_from_rpc(exc: grpc.RpcError, address: str) -> PedsearchError:
    """The pedsearch error for a failed call, keeping the server's message and status."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    S = grpc.StatusCode
    if code == S.INVALID_ARGUMENT:
        err: PedsearchError = InvalidInput(details)
    elif code == S.NOT_FOUND:
        err = NotFound(details)
    elif code == S.FAILED_PRECONDITION:
        err = NotReady(details)
    elif code == S.UNAUTHENTICATED:
        err = Unauthenticated(f"the gateway at {address} refused the call ({code.name}): "
                              f"{details}; pass --token")
    elif code == S.PERMISSION_DENIED:
        err = PermissionDenied(f"the gateway at {address} refused the call ({code.name}): "
                               f"{details}; use a token allowed to call this method")
    elif code == S.RESOURCE_EXHAUSTED:
        advice = "" if "retry" in details.lower() else "; wait a moment and retry"
        err = ResourceExhausted(f"the gateway at {address} refused the call ({code.name}): "
                                f"{details}{advice}", retry_after_s=_retry_after_s(exc))
    elif code == S.DEADLINE_EXCEEDED:
        err = DeadlineExceeded(f"the gateway at {address} did not answer in time: {details}; "
                               "a busy gateway or a large query may need a longer deadline "
                               "(--timeout)")
    elif code == S.UNAVAILABLE and not _from_gateway(exc):
        err = Unavailable(unreachable_message(address))
    elif code == S.UNAVAILABLE:
        err = Unavailable(f"the gateway at {address} answered UNAVAILABLE: {details}; retry "
                          "later")
    else:
        err = PedsearchError(f"the gateway at {address} failed ({code.name}): {details}")
    err.status = code  # type: ignore[attr-defined]
    return err


def _retry_after_s(exc: grpc.RpcError) -> float | None:
    """The gateway's ``retry-after-ms`` trailer in seconds (rate limit), if it sent one."""
    for key, value in _trailers(exc):
        if key == "retry-after-ms":
            try:
                return max(0.0, int(value) / 1000)
            except ValueError:
                return None
    return None


def _trailers(exc: grpc.RpcError) -> tuple:
    trailing = getattr(exc, "trailing_metadata", None)
    try:
        return tuple((trailing() if callable(trailing) else None) or ())
    except Exception:  # noqa: BLE001 -- an error object without trailers
        return ()


def _from_gateway(exc: grpc.RpcError) -> bool:
    """Whether the gateway itself answered the status (it marks every error it sends), as
    opposed to gRPC failing to reach it. The messages cannot tell: the gateway's own
    "Redis ... Connection refused" reads like a refused connection to the gateway."""
    return any(key == ORIGIN_KEY and value == ORIGIN_GATEWAY for key, value in _trailers(exc))


@contextlib.contextmanager
def _building(method: str) -> Iterator[None]:
    """Turns protobuf's complaints about a field (a top-k of -1, an id that is not a number, a
    time beyond int64) into :class:`InvalidInput`, as the gateway would answer them."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot build the {method} request: {exc} (see the arguments' "
                           "types and ranges in docs/API.md)") from None


def _filter(cameras: Sequence[str] | str, since_us: int | None, until_us: int | None,
            min_score: float | None) -> search_pb2.Filter:
    # one camera given as a string is that camera, not its letters (each a valid camera id)
    f = search_pb2.Filter(camera_ids=[cameras] if isinstance(cameras, str) else list(cameras))
    if since_us is not None:
        f.since_us = int(since_us)
    if until_us is not None:
        f.until_us = int(until_us)
    if min_score is not None:
        f.min_score = float(min_score)
    return f


def _hit(h: search_pb2.Hit) -> Hit:
    return Hit(score=h.score, detection=Detection.from_proto(h.detection))


def _attribute_label(key: str) -> str:
    # the map's keys are Milvus field names (attr_<family>_<value>) or family=value
    return key[5:] if key.startswith("attr_") else key
