"""A gateway's model bundles kept in step with the roll-out (:mod:`pedsearch.fleet`).

The gateway's health monitor calls :meth:`BundleSync.step` every few seconds:

1. every bundle staged in Redis that the gateway lacks is loaded (a failure is reported and
   retried after :data:`RETRY_S`, or at once when the staged folder changes);
2. a bundle loaded this way is dropped again once it is no longer staged, unless the alias
   points at its version (bundles the gateway was started with are never dropped).

Separately, :meth:`BundleSync.run_reports` refreshes the gateway's report of what it holds
every :data:`REPORT_INTERVAL_S` seconds on a thread of its own, so a monitor busy elsewhere (a
collection loading after a Milvus restart takes up to a minute) never lets the report expire:
``pedsearch rollout`` switches the alias only when every reporting gateway holds the new
version, and a gateway whose report expired would not be waited for.

Redis being down stops none of this from serving: the gateway keeps what it holds and says so
in its log once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable

import redis

from gateway.metrics import held_versions
from pedsearch.bundle import Bundle
from pedsearch.errors import PedsearchError
from pedsearch.fleet import REPORT_TTL_S, Fleet, GatewayReport

log = logging.getLogger("pedsearch.gateway")

#: seconds before a staged bundle that failed to load is tried again
RETRY_S = 30.0
#: seconds between two reports (well within their TTL)
REPORT_INTERVAL_S = 2.0

#: ``load(path) -> Bundle`` (raises PedsearchError)
Loader = Callable[[str], Bundle]


class BundleSync:
    """Loads staged bundles into a :class:`gateway.service.MilvusLink` and reports them.

    Args:
        milvus: the service's link; its ``bundles`` are what the gateway answers with.
        fleet: the staged bundles and reports of the deployment's alias.
        address: ``host:port`` other machines reach this gateway at (reported).
        load: loads a bundle folder with the parts a gateway needs.
        clock: monotonic seconds (the retry delay's).
    """

    def __init__(self, milvus, fleet: Fleet, *, address: str, load: Loader,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.milvus = milvus
        self.fleet = fleet
        self.address = address
        self.gateway_id = f"{socket.gethostname()}:{address.rsplit(':', 1)[-1]}:{os.getpid()}"
        self._load = load
        self._clock = clock
        self._pinned = set(milvus.bundles)  # started with them: never dropped
        # version -> (path, why, when); replaced, never changed in place: the reporter reads it
        self._failed: dict[str, tuple[str, str, float]] = {}
        self._redis_down = False
        self._lock = threading.Lock()  # the monitor and a direct health check may overlap
        self._closed = threading.Event()
        self._report_lock = threading.Lock()
        #: reported beside the versions: the aliased collection last seen, and the health
        self.aliased = ""
        self.serving = False

    def step(self, aliased: str | None, *, alias_known: bool = True) -> None:
        """Load what is staged, drop what no longer is, report.

        Args:
            aliased: the collection the alias points at now (``None``: none yet).
            alias_known: False when Milvus could not say: then nothing is dropped.
        """
        if alias_known:
            self.aliased = aliased or ""
        with self._lock:
            if not self._closed.is_set():
                self._step(aliased, alias_known)
        self.publish()

    def _step(self, aliased: str | None, alias_known: bool) -> None:
        try:
            staged = self.fleet.staged()
        except redis.RedisError as exc:
            if not self._redis_down:
                log.warning("cannot read the staged model bundles from Redis (%s); the gateway "
                            "keeps the versions it holds (%s)", exc, ", ".join(self.milvus.bundles))
                self._redis_down = True
            return
        if self._redis_down:
            log.info("Redis answers again: following the staged model bundles")
            self._redis_down = False
        for version, path in staged.items():
            if version not in self.milvus.bundles:
                self._try_load(version, path)
        keep = self.milvus.version_of(aliased) if aliased else None
        for version in list(self.milvus.bundles) if alias_known else []:
            if version not in staged and version not in self._pinned and version != keep:
                self.milvus.drop(version)
                log.info("model version %s is no longer staged: dropped", version)
        self._failed = {v: f for v, f in self._failed.items()
                        if v in staged and v not in self.milvus.bundles}

    def report(self) -> GatewayReport:
        return GatewayReport(gateway_id=self.gateway_id, address=self.address,
                             versions=list(self.milvus.bundles),
                             errors={v: why for v, (_path, why, _when) in self._failed.items()},
                             aliased=self.aliased, serving=self.serving)

    def publish(self) -> None:
        """Write the report (nothing once withdrawn; a Redis failure is only logged)."""
        with self._report_lock:  # never a report written after the withdrawal
            if self._closed.is_set():
                return
            held_versions(self.milvus.bundles)
            try:
                self.fleet.report(self.report())
            except redis.RedisError as exc:
                log.debug("cannot report the held versions: %s", exc)

    def run_reports(self, interval_s: float = REPORT_INTERVAL_S) -> None:
        """Publish every ``interval_s`` seconds until :meth:`withdraw` (a thread's target)."""
        assert interval_s < REPORT_TTL_S
        while not self._closed.wait(interval_s):
            self.publish()

    def withdraw(self) -> None:
        """The gateway stops: its report goes at once, so no roll-out waits for it, and no
        later step or report writes it again."""
        with self._report_lock:
            self._closed.set()
            try:
                self.fleet.withdraw(self.gateway_id)
            except redis.RedisError:
                pass  # it expires with its TTL

    def _try_load(self, version: str, path: str) -> None:
        failed = self._failed.get(version)
        if failed is not None and failed[0] == path and self._clock() - failed[2] < RETRY_S:
            return
        try:
            bundle = self._load(path)
            if bundle.version != version:
                raise PedsearchError(f"{path} holds model version {bundle.version}, "
                                     f"not {version}")
        except PedsearchError as exc:
            why = exc.message
        except Exception as exc:  # noqa: BLE001 -- a bad bundle must not stop the monitor
            why = f"{type(exc).__name__}: {exc}"
        else:
            self.milvus.hold(bundle)
            self._failed = {v: f for v, f in self._failed.items() if v != version}
            log.info("loaded the staged model bundle %s from %s", version, path)
            return
        if failed is None or failed[:2] != (path, why):
            log.error("cannot load the staged model bundle %s from %s: %s (the alias must not "
                      "move there while this gateway lacks it; retrying every %.0f s)",
                      version, path, why, RETRY_S)
        self._failed = {**self._failed, version: (path, why, self._clock())}
