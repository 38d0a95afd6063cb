"""Ray wiring of the ingest path: consumer actors in one group + an embedder actor pool.

The actors only hold the plain stage classes (:class:`ConsumerLoop`, :class:`Embedder`); every
stage runs and is tested without Ray. Consumer actors restart after a crash (``max_restarts``);
the supervisor notices the lost ``run`` call and calls it again on the restarted actor, which
resumes from the partition state saved at its last checkpoint. A ``run`` that raised (Redis,
Milvus or the crop store away) is answered with a fresh actor after a back-off
(:meth:`IngestWorkers.run`).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import asdict
from typing import Any

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError, RayTaskError

from pedsearch.attributes import AttributeSchema
from pedsearch.bundle import read_manifest
from pedsearch.config import Settings
from pedsearch import errors
from pedsearch.errors import ConfigError, PedsearchError, Unavailable

log = logging.getLogger("pedsearch.workers")

#: longest wait before a consumer that failed is run again (s)
RETRY_MAX_DELAY_S = 30.0
#: a failed run that had lasted this long starts a new count of failures in a row (s)
RETRY_RESET_S = 120.0


def init_ray(settings: Settings) -> None:
    """Connect to ``ray.address`` or start a local Ray (once per process)."""
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True}
    if settings.ray.address:
        kwargs["address"] = settings.ray.address
    else:
        kwargs.update(num_cpus=settings.ray.num_cpus, include_dashboard=False)
    # the workers find the project's packages by the working directory of the driver
    kwargs["runtime_env"] = {"env_vars": {"PYTHONUNBUFFERED": "1"}}
    ray.init(**kwargs)


def _use_gpu(settings: Settings) -> bool:
    """Whether the embedders ask Ray for a GPU each.

    Raises:
        ConfigError: ``workers.use_gpu`` is true on a local Ray without a GPU: the embedders
            would wait for one for ever, and ingest would stall without a word.
    """
    have = ray.cluster_resources().get("GPU", 0) >= 1
    if settings.workers.use_gpu is None:
        return have
    if settings.workers.use_gpu and not have:
        if not (settings.ray.address or os.environ.get("RAY_ADDRESS")):
            raise ConfigError("workers.use_gpu is true but this machine's Ray has no GPU (torch "
                              "sees none, or CUDA_VISIBLE_DEVICES hides it); leave use_gpu "
                              "unset to use one when there is one")
        log.warning("workers.use_gpu is true and the Ray cluster at %s has no GPU now: the "
                    "embedders wait until a GPU node joins (an autoscaler may add one)",
                    settings.ray.address or os.environ.get("RAY_ADDRESS"))
    return settings.workers.use_gpu


def build_consumer(settings: Settings, worker_id: str, embed) -> "Any":
    """A :class:`ConsumerLoop` with Milvus, Redis, crop store and detectors wired from config."""
    import redis

    from pedsearch.cropstore import CropStore
    from pedsearch.live import LiveFeed
    from pedsearch.schema import DetectionCollections, connect

    from workers.consumer import ConsumerLoop
    from workers.indexer import EmbedIndexSink
    from workers.pipeline import pipeline_factory

    manifest = read_manifest(settings.model.bundle)
    schema = AttributeSchema.from_dict(manifest["schema"])
    collections = DetectionCollections(connect(settings.milvus), settings.milvus)
    name = collections.ensure(manifest["version"], embed_dim=int(manifest["embed_dim"]),
                              attributes=schema)
    redis_client = redis.Redis.from_url(settings.redis.url)
    sink = EmbedIndexSink(
        embed=embed, collections=collections, collection=name,
        crop_store=CropStore(settings.paths.crops_dir), attributes=schema,
        model_version=manifest["version"],
        on_indexed=LiveFeed(redis_client, settings.milvus.alias).publish,
    )
    return ConsumerLoop(
        settings=settings, sink=sink, redis_client=redis_client,
        pipeline_factory=pipeline_factory(settings), worker_id=worker_id,
    )


class ConsumerWorker:
    """Ray actor body: one consumer loop, stoppable from another call."""

    def __init__(self, settings_json: str, worker_id: str, embedders: list) -> None:
        from workers.embedder import Embedder, EmbedderPool

        settings = Settings.model_validate_json(settings_json)
        if embedders:
            embed = EmbedderPool(embedders, batch_size=settings.workers.embed_batch)
        else:
            # workers.embedders = 0: embed on the consumer's own writer thread (one node, CPU),
            # no crop copies to another process; torch runs with the GIL released
            bundle = str(settings.model.bundle) if settings.model.bundle else None
            embed = Embedder(bundle_path=bundle, device="cpu",
                             batch_size=settings.workers.embed_batch)
        self.loop = build_consumer(settings, worker_id, embed)
        self.stop_event = threading.Event()

    def run(self, idle_exit_s: float | None = None) -> dict[str, Any]:
        self.stop_event.clear()
        return asdict(self.loop.run(self.stop_event, idle_exit_s=idle_exit_s))

    def stop(self) -> None:
        self.stop_event.set()

    def pid(self) -> int:
        return os.getpid()


def check_services(settings: Settings) -> None:
    """Fail now, in the driver, when Milvus or Redis cannot be reached: an actor whose
    constructor fails is not restarted, and its error would reach the user only as a Ray
    traceback. Only for a local Ray: a driver outside a cluster (Ray Client) may not resolve
    the in-cluster names its actors use; there :func:`init_failure` reports the actors' error.

    Raises:
        Unavailable: a service does not answer (the message names it and how to start it).
    """
    import redis

    from pedsearch.schema import connect

    connect(settings.milvus).close()
    client = redis.Redis.from_url(settings.redis.url, socket_connect_timeout=5.0,
                                  socket_timeout=5.0)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise Unavailable(f"cannot reach Redis at {settings.redis.url} ({exc}); start the local "
                          "stack with `pedsearch stack up` or set PEDSEARCH_REDIS__URL") from None
    finally:
        client.close()


def init_failure(exc: RayActorError) -> PedsearchError:
    """The error a consumer actor's constructor raised, as the pedsearch error it was."""
    text = str(exc)
    found = re.findall(r"pedsearch\.errors\.(\w+): (.+)", text)
    if found:
        name, message = found[-1]
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, PedsearchError):
            return cls(message.strip())
    last = next((line for line in reversed(text.splitlines()) if line.strip()), text)
    return PedsearchError(f"a consumer could not start: {last.strip()}")


class IngestWorkers:
    """Starts and supervises the consumer and embedder actors.

    Args:
        settings: deployment configuration (``workers.consumers``, ``workers.embedders``, ...).
    """

    def __init__(self, settings: Settings) -> None:
        from workers.embedder import Embedder

        self.settings = settings
        if not settings.ray.address:
            check_services(settings)
        init_ray(settings)
        gpu = _use_gpu(settings)
        wcfg = settings.workers
        if gpu and wcfg.embedders == 0:
            raise ConfigError("workers.embedders = 0 embeds on the consumers' CPUs; with a GPU "
                              "use an embedder pool (workers.embedders >= 1)")
        embed_actor = ray.remote(num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0,
                                 max_restarts=-1, max_task_retries=-1)(Embedder)
        bundle = str(settings.model.bundle) if settings.model.bundle else None
        self.embedders = [
            embed_actor.options(name=None).remote(
                bundle_path=bundle, device="cuda" if gpu else "cpu", batch_size=wcfg.embed_batch)
            for _ in range(wcfg.embedders)
        ]
        self._consumer_actor = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=0,
                                          max_concurrency=2)(ConsumerWorker)
        self._payload = settings.model_dump_json()
        self.consumers = [self._new_consumer(i) for i in range(wcfg.consumers)]
        self.restarts = 0

    def _new_consumer(self, i: int) -> Any:
        return self._consumer_actor.remote(
            self._payload, f"{self.settings.kafka.consumer_group}:consumer-{i}", self.embedders)

    def pids(self) -> list[int]:
        return ray.get([c.pid.remote() for c in self.consumers])

    def run(self, stop: threading.Event, *, idle_exit_s: float | None = None) -> list[dict]:
        """Run until ``stop`` is set, or every consumer was idle for ``idle_exit_s``.

        A consumer whose process died is restarted by Ray and run again at once. One whose run
        stopped on an error (a service outage: Redis, Milvus, the crop store) is replaced by a
        fresh actor after a back-off of 1, 2, 4 ... 30 s, which resumes from the last
        checkpoint, up to ``workers.retry_limit`` times in a row; a pedsearch error other than
        :class:`~pedsearch.errors.Unavailable` (configuration, bundle, data) stops the workers
        at once, since the same run would fail the same way.

        Raises:
            PedsearchError: a consumer cannot start, its restarts all failed, or it stopped on
                an error no retry can mend (its class and message are kept).
        """
        refs: dict[Any, int] = {}  # running call -> consumer
        started: dict[int, float] = {}
        retry_at: dict[int, float] = {}  # consumer -> when its replacement starts
        failures: dict[int, int] = {}  # consumer -> failures in a row
        stopping = False

        def launch(i: int) -> None:
            started[i] = time.monotonic()
            refs[self.consumers[i].run.remote(idle_exit_s)] = i

        def failed(i: int, cause: BaseException) -> None:
            ran_s = time.monotonic() - started[i]
            failures[i] = 1 if ran_s >= RETRY_RESET_S else failures.get(i, 0) + 1
            delay = self._after_failure(i, cause, failures[i])
            # a fresh actor, started when the delay is over: nothing half-done of the failed
            # run is carried over, and a constructor that needs Milvus runs once it may be back
            ray.kill(self.consumers[i], no_restart=True)
            retry_at[i] = time.monotonic() + delay

        for i in range(len(self.consumers)):
            launch(i)
        results: dict[int, dict] = {}
        try:
            while refs or retry_at:
                if stop.is_set() and not stopping:
                    stopping = True
                    retry_at.clear()
                    for i in set(refs.values()):  # the run loop sees its stop event
                        self.consumers[i].stop.remote()
                for i, due in list(retry_at.items()):
                    if time.monotonic() >= due:
                        del retry_at[i]
                        self.consumers[i] = self._new_consumer(i)
                        launch(i)
                if not refs:
                    time.sleep(0.2)
                    continue
                done, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
                for ref in done:
                    i = refs.pop(ref)
                    try:
                        results[i] = ray.get(ref)
                    except RayTaskError as exc:
                        if not stopping:
                            failed(i, exc.cause or exc)
                    except (RayActorError, ActorDiedError) as exc:
                        if stopping:
                            continue
                        if getattr(exc, "actor_init_failed", False):
                            # Ray does not restart an actor whose constructor failed
                            error = init_failure(exc)
                            if failures.get(i) and isinstance(error, Unavailable):
                                failed(i, error)  # a replacement met the outage still there
                                continue
                            raise error from None
                        self.restarts += 1
                        log.warning("consumer-%d died (%s); Ray restarts it and it resumes "
                                    "from its last checkpoint", i, type(exc).__name__)
                        launch(i)
        finally:
            if stop.is_set() and refs:
                try:
                    ray.get([self.consumers[i].stop.remote() for i in set(refs.values())],
                            timeout=30)
                except (RayActorError, GetTimeoutError) as exc:
                    log.warning("a consumer did not confirm its stop: %s", exc)
        return [results[i] for i in sorted(results)]

    def _after_failure(self, i: int, cause: BaseException, failures: int) -> float:
        """Seconds before consumer ``i`` runs again after its run raised ``cause``, its
        ``failures``-th failure in a row; raises when it must not run again."""
        # kafka-python and others wrap the error that matters
        root = cause
        while not isinstance(root, PedsearchError) and root.__cause__ is not None:
            root = root.__cause__
        if isinstance(root, PedsearchError) and not isinstance(root, Unavailable):
            raise type(root)(f"consumer-{i} stopped: {root.message}") from None
        what = f"{type(cause).__name__}: {cause}"
        limit = self.settings.workers.retry_limit
        if failures > limit:
            raise Unavailable(
                f"consumer-{i} failed {failures} times in a row, last with {what}. If Redis, "
                "Milvus or the crop store is away, check them (`pedsearch stack status`) and "
                "start the workers again: they resume from their last checkpoint; otherwise "
                "the error is the workers' own (the log above has its traceback)"
                + ("" if limit else "; workers.retry_limit = 0 gives up at once")) from None
        delay = min(RETRY_MAX_DELAY_S, 2.0 ** (failures - 1))
        self.restarts += 1
        log.warning("consumer-%d stopped on %s; a fresh one resumes from the last checkpoint "
                    "in %.0f s (restart %d of at most %d in a row)", i, what, delay, failures,
                    limit)
        return delay

    def shutdown(self) -> None:
        for a in [*self.consumers, *self.embedders]:
            try:
                ray.kill(a)
            except Exception:  # already gone
                pass


def run_ingest(settings: Settings, *, idle_exit_s: float | None = None,
               stop: threading.Event | None = None) -> list[dict]:
    """Start the workers, run them until stopped or idle, shut them down."""
    stop = stop or threading.Event()
    workers = IngestWorkers(settings)
    try:
        return workers.run(stop, idle_exit_s=idle_exit_s)
    except PedsearchError:
        raise
    finally:
        workers.shutdown()
        time.sleep(0)
