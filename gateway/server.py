"""The gateway's gRPC server: the Search service, health, reflection, auth, TLS, rate limit.

Example:
    >>> from gateway.server import create_server                    # doctest: +SKIP
    >>> server = create_server("127.0.0.1:0", settings=load_settings())
    >>> server.start(); print(server.port)
    >>> ...
    >>> server.stop(grace=2.0)

Health (``grpc.health.v1``) reports SERVING for ``""`` and ``pedsearch.v1.Search`` once the
bundle is loaded, Milvus answers and the gateway holds the version the alias points at,
NOT_SERVING otherwise. A monitor thread re-checks every :data:`HEALTH_INTERVAL_S` seconds: it
loads the bundles a roll-out stages and reports the versions held (:mod:`gateway.bundles`), and
loads the aliased collection again after a Milvus restart, when searches would fail until it is.
"""

from __future__ import annotations

import logging
import pathlib
import socket
import ssl
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.address import WILDCARD_HOSTS, listen_address, local_host
from gateway.auth import TokenAuth
from gateway.bundles import BundleSync
from gateway.interceptor import GatewayInterceptor
from gateway.ratelimit import RateLimiter
from gateway.service import SearchService, not_held
from pedsearch.bundle import Bundle, default_bundle_path, load_bundle
from pedsearch.config import Settings
from pedsearch.errors import ConfigError, PedsearchError
from pedsearch.fleet import Fleet
from pedsearch.schema import DetectionCollections
from pedsearch.v1 import search_pb2, search_pb2_grpc

log = logging.getLogger("pedsearch.gateway")

SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["Search"].full_name
HEALTH_INTERVAL_S = 2.0
#: an 8 MiB query image plus the rest of the request must fit
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
BUNDLE_PARTS = ("image", "text", "attributes")


def server_credentials(cert: pathlib.Path | None, key: pathlib.Path | None):
    """TLS credentials of ``gateway.tls_cert`` / ``tls_key``, or ``None`` when both are unset.

    Raises:
        ConfigError: only one is set, or a file cannot be read.
    """
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("TLS needs both gateway.tls_cert and gateway.tls_key")
    try:
        pair = (pathlib.Path(key).read_bytes(), pathlib.Path(cert).read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the TLS certificate or key: {exc}") from exc
    # grpc would only fail at bind time, with a message about the port: check the pair here
    try:
        # an empty password: OpenSSL would otherwise prompt for an encrypted key's passphrase
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"gateway.tls_cert {cert} and gateway.tls_key {key} are not a PEM certificate "
            f"chain and its unencrypted private key ({getattr(exc, 'reason', None) or exc}); "
            "an encrypted key must be decrypted first (`openssl pkey -in key.pem -out "
            "plain.pem`); a test pair: `openssl req -x509 -newkey rsa:2048 -nodes -keyout "
            "key.pem -out cert.pem -subj /CN=localhost -addext subjectAltName=DNS:localhost,"
            "IP:127.0.0.1` (the names clients dial must be in it)") from None
    return grpc.ssl_server_credentials([pair])


class GatewayServer:
    """A configured gateway server; build it with :func:`create_server`.

    Attributes:
        port: the bound port (the chosen one when the address asked for port 0).
        address: ``host:port`` clients on this machine connect to.
        bind_address: ``host:port`` it listens on (``0.0.0.0:port``: every interface).
        tls: whether the port serves TLS.
        service: the :class:`SearchService`.
    """

    def __init__(self, *, server: grpc.Server, port: int, host: str, service: SearchService,
                 health_servicer: health.HealthServicer, limiter: RateLimiter | None,
                 tls: bool, bind_host: str | None = None) -> None:
        self.server = server
        self.port = port
        self.address = f"{host}:{port}"
        self.bind_address = f"{bind_host or host}:{port}"
        self.service = service
        self.health = health_servicer
        self.limiter = limiter
        self.tls = tls
        self._stopping = service.stopping
        self._monitor: threading.Thread | None = None
        self._unheld: str | None = None  # the unheld aliased collection last logged
        self.serving = False
        #: follows the bundles a roll-out stages (none without a primary bundle to answer with)
        self.sync = (BundleSync(service.milvus, Fleet(service.redis, service.settings.milvus.alias),
                                address=reported_address(bind_host or host, port),
                                load=load_query_bundle)
                     if service.bundle is not None else None)
        self._reporter: threading.Thread | None = None

    def start(self) -> "GatewayServer":
        """Check health once, start serving and the health monitor."""
        self.check_health(wait=False)  # a collection still loading: the monitor waits for it
        self.server.start()
        self._monitor = threading.Thread(target=self._watch_health, name="gateway-health",
                                         daemon=True)
        self._monitor.start()
        if self.sync is not None:
            self._reporter = threading.Thread(target=self.sync.run_reports, daemon=True,
                                              name="gateway-report")
            self._reporter.start()
        log.info("gateway listening on %s (%s)", self.bind_address,
                 "TLS" if self.tls else "plaintext")
        return self

    def stop(self, grace: float | None = 2.0) -> None:
        """End open watches, stop accepting RPCs and wait up to ``grace`` s for those running."""
        self._stopping.set()
        if self.sync is not None:  # first: no roll-out waits for a gateway going away
            self.sync.withdraw()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        for thread in (self._monitor, self._reporter):
            if thread is not None:
                thread.join(timeout=HEALTH_INTERVAL_S + 5)
        self.service.close()
        if self.limiter is not None:
            self.limiter.close()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.server.wait_for_termination(timeout)

    def __enter__(self) -> "GatewayServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def check_health(self, *, wait: bool = True) -> bool:
        """Follow the staged bundles, then set SERVING iff the bundle is loaded, Milvus answers,
        the gateway holds the version the alias points at and its collection is loaded; returns
        that. ``wait``: load the collection if it is not (up to 60 s)."""
        ok = self.service.bundle is not None and self.service.milvus.ping()
        name, known = None, False
        if ok:
            try:
                name, known = self.service.milvus.searcher().resolve_alias(timeout_s=2.0), True
            except PedsearchError as exc:
                log.debug("alias lookup failed: %s", exc.message)
                ok = False
        if self.sync is not None:
            self.sync.step(name, alias_known=known)
        if ok:
            ok = self._aliased_collection_serves(name, wait=wait)
        self._set_serving(ok)
        return ok

    def _set_serving(self, ok: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if ok
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        if ok != self.serving:
            log.info("gateway health: %s", "SERVING" if ok else "NOT_SERVING")
        self.serving = ok
        if self.sync is not None:
            self.sync.serving = ok  # in its next report
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def _aliased_collection_serves(self, name: str | None, *, wait: bool) -> bool:
        """Whether the aliased collection ``name`` answers searches (true when there is none
        yet: the gateway then answers FAILED_PRECONDITION, which no reload fixes). False when
        it is of a version the gateway holds no bundle of. After a Milvus restart searches fail
        until the collection is loaded again: NOT_SERVING while this loads it."""
        if name is None:
            return True
        milvus = self.service.milvus
        if milvus.version_of(name) is None:
            if name != self._unheld:
                log.error("%s", not_held(self.service.settings.milvus.alias, name,
                                         milvus.bundles).message)
            self._unheld = name
            return False
        self._unheld = None
        try:
            searcher = milvus.searcher()
            state = str(searcher.client.get_load_state(name, timeout=2.0).get("state"))
            if state.endswith("Loaded"):
                return True
            self._set_serving(False)
            if not wait:
                return False
            if state.endswith("NotLoad"):
                log.info("loading collection %s", name)
            # NotLoad: load it; Loading (Milvus reloads by itself after a restart): wait for it
            DetectionCollections(searcher.client, self.service.settings.milvus).wait_loaded(
                name, timeout_s=60.0, state=state)
            return True
        except Exception as exc:  # noqa: BLE001 -- the monitor reports, it never dies
            log.debug("collection load check failed: %s", exc)
            return False

    def _watch_health(self) -> None:
        while not self._stopping.wait(HEALTH_INTERVAL_S):
            try:
                self.check_health()
            except Exception:  # noqa: BLE001
                log.exception("health check failed")


def reported_address(bind_host: str, port: int) -> str:
    """``host:port`` another machine reaches a gateway bound to ``bind_host`` at (for the
    roll-out's messages): the machine's name for a wildcard bind."""
    host = socket.gethostname() if bind_host in WILDCARD_HOSTS else bind_host
    return f"{host}:{port}"


def load_query_bundle(path) -> Bundle:
    """A bundle folder with the parts a gateway answers with."""
    return load_bundle(path, parts=BUNDLE_PARTS)


def load_gateway_bundle(settings: Settings) -> tuple[Bundle | None, str | None]:
    """The bundle of ``model.bundle`` (default: the shipped one) with every query part, or
    ``(None, why)`` -- the server then runs NOT_SERVING and answers FAILED_PRECONDITION."""
    path = settings.model.bundle or default_bundle_path()
    try:
        return load_query_bundle(path), None
    except PedsearchError as exc:
        log.error("cannot load the model bundle: %s", exc.message)
        return None, exc.message


def load_extra_bundles(settings: Settings, primary: Bundle | None) -> list[Bundle]:
    """The bundles of ``gateway.bundles``, each of another model version than the primary's.

    Raises:
        ConfigError: one cannot be loaded, or two hold the same version (the operator asked for
            them: a gateway quietly without one would fail the roll-out it is meant for).
    """
    seen = {primary.version} if primary is not None else set()
    out = []
    for path in settings.gateway.bundles:
        try:
            extra = load_query_bundle(path)
        except PedsearchError as exc:
            raise ConfigError(f"gateway.bundles: cannot load {path}: {exc.message}") from None
        if extra.version in seen:
            raise ConfigError(f"gateway.bundles: {path} holds model version {extra.version}, "
                              "which the gateway holds already; list each version once")
        seen.add(extra.version)
        out.append(extra)
    return out


def create_server(address: str | None = None, *, settings: Settings,
                  bundle: Bundle | None = None) -> GatewayServer:
    """Build (not start) the gateway server.

    Args:
        address: ``host:port`` to listen on (port 0 = a free one); default
            ``settings.gateway.address``.
        settings: deployment configuration (milvus, redis, paths, gateway, model).
        bundle: an already loaded bundle (``image``, ``text``, ``attributes`` parts); ``None``
            loads ``settings.model.bundle`` or the shipped default. The bundles of
            ``settings.gateway.bundles`` are held beside it (:func:`load_extra_bundles`).

    Returns:
        a :class:`GatewayServer`; call :meth:`~GatewayServer.start`.

    Raises:
        ConfigError: the address cannot be bound, the TLS files are unusable, or a bundle of
            ``gateway.bundles`` cannot be loaded.
    """
    cfg = settings.gateway
    address = address or cfg.address
    bind_host, _ = listen_address(address)
    bundle_error = None
    if bundle is None:
        bundle, bundle_error = load_gateway_bundle(settings)
    extra = load_extra_bundles(settings, bundle)
    creds = server_credentials(cfg.tls_cert, cfg.tls_key)
    limiter = (RateLimiter(settings.redis.url, rate_per_s=cfg.rate_limit_per_s,
                           burst=cfg.rate_limit_burst) if cfg.rate_limit_per_s > 0 else None)
    interceptor = GatewayInterceptor(auth=TokenAuth(cfg.tokens), limiter=limiter)
    # every open Watch holds a thread: unary RPCs keep max_workers threads of their own
    pool = futures.ThreadPoolExecutor(max_workers=cfg.max_workers + cfg.max_watches,
                                      thread_name_prefix="gateway")
    server = grpc.server(
        pool, interceptors=[interceptor],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.so_reuseport", 0)],
    )
    stopping = threading.Event()
    service = SearchService(settings=settings, bundle=bundle, bundle_error=bundle_error,
                            stopping=stopping, extra_bundles=extra)
    search_pb2_grpc.add_SearchServicer_to_server(service, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = (server.add_secure_port(address, creds) if creds is not None
                else server.add_insecure_port(address))
    except RuntimeError as exc:
        port = 0
        log.debug("bind %s failed: %s", address, exc)
    if not port:
        service.close()
        raise ConfigError(f"cannot listen on {address}: the port is taken or the address is "
                          "invalid; choose another with --address or gateway.address")
    host = local_host(bind_host)
    return GatewayServer(server=server, port=port, host=host, service=service,
                         health_servicer=health_servicer, limiter=limiter, tls=creds is not None,
                         bind_host=bind_host)
