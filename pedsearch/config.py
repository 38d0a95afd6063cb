"""Typed configuration: one YAML file (optionally over a ``_base_`` file) plus environment.

Precedence, lowest first: field defaults < ``_base_`` file < the file itself < environment
variables. Environment variables are ``PEDSEARCH_<SECTION>__<FIELD>``, for example
``PEDSEARCH_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or ``PEDSEARCH_MILVUS__URI=http://m:19530``,
so the very same code points at an external Kafka, Milvus, Redis and Ray cluster by address.
The file is named by ``--config`` or ``PEDSEARCH_CONFIG``.

Every model forbids unknown keys, so a typo in a file is an error with the key's path, not a
silently ignored setting.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
from typing import Any, Callable, Literal, Mapping

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

try:  # exported at the top from pydantic-settings 2.x releases that moved it out of sources
    from pydantic_settings import SettingsError
except ImportError:  # pragma: no cover -- older 2.x
    from pydantic_settings.sources import SettingsError

from pedsearch.errors import ConfigError

ENV_PREFIX = "PEDSEARCH_"
#: what a camera id may be, in frames, configuration and queries alike. Anchored with ``\Z``
#: and tested with ``fullmatch``: ``$`` also accepts a trailing newline ("gate-3\n"), which
#: then breaks the Milvus filter expression the id is quoted into
CAMERA_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
CONFIG_ENV = "PEDSEARCH_CONFIG"

log = logging.getLogger("pedsearch.config")


#: a Kafka topic name: letters, digits, ``.``, ``_`` and ``-`` (and not ``.`` or ``..``)
TOPIC_NAME = r"^[A-Za-z0-9._-]+$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class KafkaConfig(Strict):
    bootstrap_servers: str = Field("127.0.0.1:19092", description="host:port[,host:port...]")
    # Kafka's own rule for topic names: checked here, else the first poison message would
    # crash the workers when the dead-letter producer refuses the name
    frames_topic: str = Field("frames", pattern=TOPIC_NAME, max_length=249,
                              description="topic of Frame envelopes")
    dlq_topic: str = Field("frames.dlq", pattern=TOPIC_NAME, max_length=249,
                           description="dead-letter topic")
    consumer_group: str = Field("pedsearch-workers", min_length=1)
    max_poll_records: int = Field(
        8, ge=1, le=1000,
        description="frames per poll; small so a batch always ends inside max_poll_interval_ms",
    )
    max_poll_interval_ms: int = Field(
        30_000, ge=1000, le=3_600_000,
        description="rebalance timeout; the embedded broker completes a group's first join "
        "only after it has passed, so the local profile keeps it small",
    )
    session_timeout_ms: int = Field(
        10_000, ge=3000, le=300_000,
        description="the consumer heartbeats every third of it (at least 1 s apart), and a "
        "heartbeat must come within it; brokers refuse less than group.min.session.timeout.ms "
        "(6000 by default)",
    )
    max_message_bytes: int = Field(
        4 * 1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024,
        description="largest frame envelope accepted (producer, consumer and broker together)",
    )
    request_timeout_ms: int = Field(30_000, ge=1000, le=300_000)

    @pydantic.model_validator(mode="after")
    def _dlq_is_not_the_frames_topic(self) -> KafkaConfig:
        # the workers consume what they dead-letter: every poison message would come back,
        # be dead-lettered again, and so on for ever
        for name in ("frames_topic", "dlq_topic"):
            if getattr(self, name) in (".", ".."):
                raise ValueError(f"kafka.{name} cannot be {getattr(self, name)!r} (Kafka's rule)")
        if self.dlq_topic == self.frames_topic:
            raise ValueError(f"kafka.dlq_topic must differ from kafka.frames_topic (both are "
                             f"{self.frames_topic!r}): dead letters would be consumed again")
        return self


class MilvusConfig(Strict):
    uri: str = Field("http://127.0.0.1:19530", description="Milvus server URI")
    token: str = Field("", description="user:password or API token; empty for none")
    alias: str = Field("detections", min_length=1, description="alias the gateway searches")
    collection_prefix: str = Field("detections_", min_length=1)
    index_type: Literal["HNSW", "IVF_FLAT", "IVF_SQ8", "FLAT"] = "HNSW"
    index_params: dict[str, int] = Field(default_factory=lambda: {"M": 16, "efConstruction": 200})
    search_params: dict[str, int] = Field(
        default_factory=lambda: {"ef": 512},
        description="HNSW ef 512: text-query recall@10 0.985 at 100k rows once Milvus has merged "
        "the segments (ef 384: 0.970, ef 256: 0.938; benchmarks/query.py, docs/BENCHMARKS.md "
        "session 19); raised to top-k when k is larger",
    )
    metric_type: Literal["IP", "L2", "COSINE"] = Field(
        "IP", description="embeddings are L2-normalised, so IP is cosine"
    )
    shards_num: int = Field(1, ge=1, le=16)
    scalar_indexes: list[Literal["camera_id", "ts_us", "track_id"]] = Field(
        default_factory=lambda: ["camera_id", "ts_us"],
        description="scalar fields indexed when a collection is created, or before an "
        "older one is next loaded (a trie for camera_id, a sorted array for the integers), so "
        "camera and time filters do not scan every row; [] = none",
    )
    camera_partition_key: bool = Field(
        False,
        description="make camera_id the partition key, so camera filters prune partitions. "
        "Needs Milvus >= 2.3.6: 2.3.5 (the embedded server) files upserted rows under the wrong "
        "partition and camera filters then miss them (milvus-io/milvus#30607)",
    )
    timeout_s: float = Field(10.0, gt=0, le=600)


class RedisConfig(Strict):
    url: str = Field("redis://127.0.0.1:16379/0", pattern=r"^(redis|rediss|unix)://\S+$",
                     description="redis://, rediss:// or unix:// URL")


class RayConfig(Strict):
    address: str | None = Field(
        None, description="Ray cluster address (ray://host:10001 or auto); None starts Ray locally"
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray; None = all")


class StackConfig(Strict):
    """Ports and data of the embedded local stack (``pedsearch stack up``)."""

    data_dir: pathlib.Path = Field(pathlib.Path(".pedsearch"), description="state, logs, pids")
    host: str = Field("127.0.0.1", description="address Kafka and Redis bind (Milvus "
                      "standalone has no bind setting: it listens on every interface)")
    kafka_port: int = Field(19092, ge=0, le=65535, description="0 = pick a free port")
    milvus_port: int = Field(19530, ge=0, le=65535)
    redis_port: int = Field(16379, ge=0, le=65535)
    start_timeout_s: float = Field(180.0, gt=0, le=1800)


class PathsConfig(Strict):
    """Where third-party data and detector files are read from; never committed here."""

    data_root: pathlib.Path | None = Field(
        None, description="folder with peta/, mot17/, cuhk-pedes/, market1501-attribute/"
    )
    models_root: pathlib.Path | None = Field(
        None, description="folder with detector files (yolo-fastest-1.1-body/, yolox-nano/)"
    )
    crops_dir: pathlib.Path = Field(pathlib.Path(".pedsearch/crops"))

    def resolved_data_root(self) -> pathlib.Path | None:
        """``data_root`` if set, else ``../shared/data`` beside a source checkout, if present."""
        return self.data_root or _beside_checkout("data")

    def resolved_models_root(self) -> pathlib.Path | None:
        """``models_root`` if set, else ``../shared/models`` beside a source checkout."""
        return self.models_root or _beside_checkout("models")


class DetectorSpec(BaseModel):
    """A detector plug-in by name; the other keys are checked by the plug-in's own model."""

    model_config = ConfigDict(extra="allow")
    type: str = Field("bgsub", min_length=1, description="detector plug-in name")

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CameraConfig(Strict):
    detector: DetectorSpec = Field(default_factory=DetectorSpec)
    location: str = ""


class TrackingConfig(Strict):
    iou_threshold: float = Field(0.3, gt=0, lt=1, description="min IoU to continue a track")
    max_age_frames: int = Field(5, ge=1, le=1000, description="frames a lost track survives")
    min_hits: int = Field(2, ge=1, le=100, description="matched frames before a track counts")
    center_gate: float = Field(
        0.5, ge=0, le=5,
        description="second association stage for what IoU left unmatched: predicted and "
        "detected box centres closer than this many box heights match (0 = IoU only)",
    )
    window_s: float = Field(
        4.0, gt=0, le=3600,
        description="one crop per track and window: a person walking past is stored once per "
        "window, not once per frame",
    )
    min_box_height: int = Field(48, ge=8, le=2000, description="smaller boxes are not stored")
    early_emit: bool = Field(
        True, description="store a window's first crop at once (freshness) and overwrite it "
        "with the window's best crop when the window closes (same id)",
    )
    idle_close_s: float = Field(
        15.0, ge=0, le=86400,
        description="a camera that sent no frame for this many seconds (wall clock) has its "
        "open track windows closed and their best crops stored; 0 = only when the consumer "
        "stops",
    )
    forget_after_s: float = Field(
        600.0, ge=0, le=7 * 86400,
        description="a camera that sent no frame for this many seconds (wall clock) is "
        "forgotten once its windows are stored: its tracker and detector state leave memory and "
        "the checkpoints, and a restart no longer replays back to its last frames; it starts "
        "afresh if it returns; 0 = never",
    )


class WorkersConfig(Strict):
    consumers: int = Field(1, ge=1, le=256, description="consumer actors in the group")
    embedders: int = Field(
        1, ge=0, le=256,
        description="embedder actors in the pool; 0 = embed inside each consumer actor (CPU)",
    )
    embed_batch: int = Field(32, ge=1, le=1024)
    max_inflight_batches: int = Field(
        4, ge=1, le=1024, description="embedding batches in flight per consumer (backpressure)"
    )
    milvus_batch: int = Field(64, ge=1, le=10_000)
    flush_interval_s: float = Field(
        1.0, gt=0, le=60, description="longest a finished crop waits before it is written"
    )
    unknown_cameras: Literal["accept", "dead_letter"] = Field(
        "accept", description="frames of a camera missing from `cameras` use the default detector"
    )
    default_detector: DetectorSpec = Field(default_factory=DetectorSpec)
    use_gpu: bool | None = Field(None, description="None = use a GPU when Ray reports one")
    retry_limit: int = Field(
        20, ge=0, le=1_000_000,
        description="restarts in a row of a consumer whose run stopped on an error (a service "
        "outage: Redis, Milvus, the crop store), each from the last checkpoint after 1, 2, "
        "4 ... 30 s; the workers stop when the last one fails too. A run of 2 minutes clears "
        "the count; configuration errors are never retried; 0 = stop at the first error",
    )


class ModelConfig(Strict):
    bundle: pathlib.Path | None = Field(
        None, description="model bundle folder; None = the default bundle shipped with pedsearch"
    )


#: weight of SOFT attribute constraints in the re-ranking score (see GatewayConfig)
DEFAULT_SOFT_WEIGHT = 1.0
#: the least probability the soft bonus's geometric mean counts (a 0 would zero every other fit)
SOFT_PROBABILITY_FLOOR = 1e-6


class GatewayConfig(Strict):
    """The gRPC query gateway (``pedsearch gateway``)."""

    address: str = Field("127.0.0.1:50051", description="host:port the gateway listens on")
    max_workers: int = Field(16, ge=1, le=1024, description="threads serving RPCs")
    tokens: dict[str, list[str]] = Field(
        default_factory=dict,
        description="bearer token -> RPC method names it may call ('*' = all); empty = no auth",
    )

    @pydantic.field_validator("tokens")
    @classmethod
    def _known_methods(cls, tokens: dict[str, list[str]]) -> dict[str, list[str]]:
        # a misspelt name would only show as PERMISSION_DENIED when a client calls it
        from pedsearch.v1 import search_pb2

        known = [m.name for m in search_pb2.DESCRIPTOR.services_by_name["Search"].methods]
        for i, methods in enumerate(tokens.values()):
            bad = [m for m in methods if m != "*" and m not in known]
            if bad:  # the token itself is a secret: named by its position
                raise ValueError(f"token {i + 1} lists {', '.join(map(repr, bad))}, not a "
                                 f"method of the Search service ({', '.join(known)}, or '*')")
        return tokens

    tls_cert: pathlib.Path | None = Field(None, description="PEM certificate chain; enables TLS")
    tls_key: pathlib.Path | None = Field(None, description="PEM private key of tls_cert")
    rate_limit_per_s: float = Field(
        50.0, ge=0, le=1e6,
        description="requests per second per client (its token when tokens are checked, else its "
        "host); 0 = off",
    )
    rate_limit_burst: int = Field(100, ge=1, le=1_000_000, description="bucket size")
    max_watches: int = Field(64, ge=0, le=100_000, description="concurrent Watch streams")
    watch_default_s: int = Field(600, ge=1, le=86_400, description="Watch duration if unset")
    watch_max_s: int = Field(3600, ge=1, le=86_400, description="longest a Watch may run")
    watch_heartbeat_s: float = Field(5.0, gt=0, le=300)
    # 1.0: on the shipped bundle's held-out identities an attribute query ranked by concept
    # cosine + 1.0 x the geometric mean of the asked values' P scores mAP 0.567 (synthetic) /
    # 0.349 (PETA) against 0.33 / 0.26 by the cosine alone (docs/RESULTS.md); its validation
    # split gave 0.300 / 0.342 / 0.349 at weights 0.5 / 1 / 2, two training seeds of the
    # results benchmark 0.51 / 0.50 at 1 and 0.51 / 0.49 at 2, and 1.0 keeps the cosine in
    # charge of text and image queries
    soft_weight: float = Field(
        DEFAULT_SOFT_WEIGHT, ge=0, le=10,
        description="weight of SOFT attribute constraints when re-ranking",
    )
    rerank_factor: int = Field(
        4, ge=1, le=100, description="candidates fetched per hit wanted when re-ranking (soft "
        "attribute constraints; text queries on a collection of the earlier vector layout)"
    )
    # CMAAM ranks text queries by latent + attribute similarity (Eq. 19); on the shipped
    # bundle's held-out identities it lifts text R@1 from 64.4 to 70.2 % (synthetic) and from
    # 32.6 to 34.6 % (PETA) over the latent cosine alone (docs/RESULTS.md). A bundle knows
    # whether its validation agreed (Bundle.text_attribute_weight), so each version served
    # during a roll-out ranks as it validated best
    text_attribute_weight: float | None = Field(
        None, ge=0, le=10,
        description="weight of the caption's attribute similarity in text queries' score "
                    "(CMAAM Eq. 19); 0 = the joint embedding's cosine alone; None = each "
                    "bundle's own choice (1, or 0 when its validation ranked better without)",
    )
    # 1: the gateway answers concurrent RPCs on its own threads, so a query's encoder gets one
    # core; intra-op threads would fight those RPCs, Milvus and each other for the same cores
    # (docs/BENCHMARKS.md: on 2 cores the text encoder inside the gateway took 1.3-1.9 ms more
    # at the median with 2 threads than a 1-thread encoder timed in the same run)
    bundles: list[pathlib.Path] = Field(
        default_factory=list,
        description="further model bundles the gateway holds from its start beside "
        "model.bundle (never dropped): each request is answered by the bundle of the version "
        "the Milvus alias points at; the bundles `pedsearch rollout` stages are loaded while "
        "the gateway runs without being listed here",
    )
    encoder_threads: int = Field(
        1, ge=0, le=1024,
        description="torch threads per query encoding in `pedsearch gateway serve` (torch's "
        "intra-op threads, process-wide); 0 = torch's default, one per core",
    )


class Settings(BaseSettings):
    """The whole configuration of a pedsearch deployment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    milvus: MilvusConfig = Field(default_factory=MilvusConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    stack: StackConfig = Field(default_factory=StackConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    cameras: dict[str, CameraConfig] = Field(default_factory=dict)

    @pydantic.field_validator("cameras")
    @classmethod
    def _camera_ids(cls, cameras: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
        # an id no frame can carry would configure nothing, silently
        bad = [cam for cam in cameras if not CAMERA_ID.fullmatch(cam)]
        if bad:
            raise ValueError(f"camera ids {bad} are invalid: 1-64 letters, digits or '_.:-', "
                             "starting with a letter or digit (as in the frames' camera_id)")
        return cameras

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # environment beats the file, which arrives as init kwargs
        return (env_settings, init_settings)

    def camera(self, camera_id: str) -> CameraConfig | None:
        """The configuration of ``camera_id``; ``None`` if it is not configured."""
        return self.cameras.get(camera_id)


def read_yaml(
    path: pathlib.Path, *, what: str = "config file",
    resolve_base: Callable[[pathlib.Path, str], pathlib.Path] | None = None,
    _seen: tuple[pathlib.Path, ...] = (),
) -> dict[str, Any]:
    """A YAML mapping with its ``_base_`` chain merged in (the file wins over its base).

    Args:
        path: the YAML file.
        what: how error messages name the file ("config file", "training config").
        resolve_base: ``(file, base) -> path`` of a ``_base_`` entry; default: beside the file.
    """
    path = path.expanduser().resolve()
    if path in _seen:
        raise ConfigError(f"{what} {path} includes itself through _base_")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder; give the YAML file in it") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping, not {type(data).__name__}")
    base = data.pop("_base_", None)
    if base is None:
        return data
    base_path = resolve_base(path, str(base)) if resolve_base else path.parent / str(base)
    merged = read_yaml(base_path, what=what, resolve_base=resolve_base, _seen=(*_seen, path))
    return deep_merge(merged, data)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` wins; nested mappings merge key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


#: PEDSEARCH_ variables that are not settings: the config file, the client's token, the
#: training configuration (read by ``training.config``), test and benchmark fixtures
_OTHER_ENV = ("CONFIG", "TOKEN")
_OTHER_ENV_PREFIXES = ("TRAIN__", "TEST_", "BENCH_")


def unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """``PEDSEARCH_`` variables that name no settings section (``PEDSEARCH_MILVIS__URI``):
    pydantic-settings ignores them, so a typo would go unnoticed. (An unknown field of a known
    section, ``PEDSEARCH_MILVUS__URL``, is already an error: the sections forbid extra keys.)"""
    problems = []
    for key in sorted(environ):
        if not key.startswith(ENV_PREFIX):
            continue
        rest = key[len(ENV_PREFIX):]
        if rest in _OTHER_ENV or rest.startswith(_OTHER_ENV_PREFIXES):
            continue
        section = rest.lower().partition("__")[0]
        if section not in Settings.model_fields:
            problems.append(f"{key} is not a setting (no section {section!r}; known: "
                            f"{', '.join(Settings.model_fields)}): it is ignored")
    return problems


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load settings from ``path`` (or ``$PEDSEARCH_CONFIG``) and the environment.

    Args:
        path: YAML file; ``None`` reads ``$PEDSEARCH_CONFIG`` if set, else defaults only.
        overrides: section mappings merged over the file (for tests and CLI flags).

    Raises:
        ConfigError: unreadable file, unknown key, or a value out of bounds, with its path.
    """
    path = path or os.environ.get(CONFIG_ENV) or None
    for problem in unknown_environment(os.environ):
        log.warning("%s", problem)
    data = read_yaml(pathlib.Path(path)) if path else {}
    try:
        settings = Settings(**data)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"invalid configuration ({_culprits(exc, path)}):\n"
                          f"{_without_tokens(exc)}") from None
    except SettingsError as exc:  # an environment variable that should hold JSON does not
        raise ConfigError(f"invalid configuration in the environment: {exc}; a {ENV_PREFIX}"
                          "... variable of a list or mapping field takes JSON, e.g. "
                          "PEDSEARCH_GATEWAY__TOKENS='{\"token\": [\"SearchText\"]}'") from exc
    # command-line flags beat the environment, which beats the file: applied after both
    try:
        _apply_overrides(settings, overrides)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"invalid command-line value:\n{_without_tokens(exc)}") from None
    return settings


def _without_tokens(exc: pydantic.ValidationError) -> str:
    """``exc`` as text; when an error is in the ``gateway`` section, every error is written
    without the input pydantic would quote (it would show ``gateway.tokens``, whose keys are
    secrets, whole or shortened) and a token in an error's location reads ``<token>``."""
    errors = exc.errors(include_input=False)
    if not any(str(e["loc"][0]) in ("gateway", "tokens") for e in errors if e["loc"]):
        return str(exc)
    lines = [f"{len(errors)} validation error{'s' if len(errors) > 1 else ''} for Settings"]
    for e in errors:
        loc = [str(x) for x in e["loc"]]
        at = 2 if loc[:2] == ["gateway", "tokens"] else 1 if loc[:1] == ["tokens"] else None
        if at is not None and len(loc) > at:
            loc[at] = "<token>"
        lines += [".".join(loc), f"  {e['msg']} [type={e['type']}]"]
    return "\n".join(lines)


def _culprits(exc: pydantic.ValidationError, path: str | os.PathLike[str] | None) -> str:
    """Where the bad values of ``exc`` came from: the ``PEDSEARCH_...`` variables that set
    them, else the file."""
    names = []
    for err in exc.errors():
        var = ENV_PREFIX + "__".join(str(p) for p in err["loc"]).upper()
        # a nested section set as a whole (PEDSEARCH_STACK='{...}') counts too
        hits = [k for k in os.environ if k.upper() == var or (
            k.upper().startswith(ENV_PREFIX) and var.startswith(k.upper() + "__"))]
        names += [h for h in hits if h not in names]
    if names:
        return "set by " + ", ".join(names)
    return f"in {path}" if path else "in the defaults"


def _apply_overrides(model: pydantic.BaseModel, overrides: Mapping[str, Any]) -> None:
    """Set ``overrides`` (mappings of sections) on ``model``.

    A section is validated whole, its current values merged with the overrides, so checks
    across its fields (``kafka.dlq_topic`` differs from ``frames_topic``) see the final values
    and plug-in keys of a detector spec pass as they do in a file.
    """
    for key, value in overrides.items():
        if key not in type(model).model_fields:
            raise ConfigError(f"unknown setting {key!r}")
        current = getattr(model, key)
        if isinstance(current, pydantic.BaseModel) and isinstance(value, Mapping):
            value = deep_merge(current.model_dump(), value)
        # validated with the field's own validators, also where assignments are not
        model.__pydantic_validator__.validate_assignment(model, key, value)


def _beside_checkout(name: str) -> pathlib.Path | None:
    guess = pathlib.Path(__file__).resolve().parents[2] / "shared" / name
    return guess if guess.is_dir() else None
