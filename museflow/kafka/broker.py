"""A real local Apache Kafka (KRaft) for development, the demo and the tests: one node, or a cluster.

The broker distribution is found in this order: ``KAFKA_HOME``; the museflow cache
(``$XDG_CACHE_HOME/museflow/kafka/<version>``); otherwise it is fetched once — with ``mvn``
from Maven Central using the pom kept beside this module, or from the Apache release tarball
where the internet is reachable — and verified (Maven's strict checksums, or the release's
SHA-512; then a sha256 manifest of every jar that later starts re-check).

Each instance has its own directory (config, data, log, ``instance.json``), free ports by
default, listeners on 127.0.0.1, and :meth:`LocalKafka.start` returns only once the broker
answers metadata requests.

:class:`LocalCluster` runs three (or more) combined broker+controller nodes with one cluster id
and a static controller quorum, internal topics at replication factor 3 and
``min.insync.replicas=2``; each node can be stopped, killed (SIGKILL) and started on its own, and
the cluster tells which node is the active controller and which leads a partition.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from museflow.errors import BrokerLaunchError

__all__ = [
    "BrokerInstance",
    "ClusterInstance",
    "KafkaDistribution",
    "LocalCluster",
    "LocalKafka",
    "TlsFiles",
    "cache_root",
    "kafka_version",
    "locate_distribution",
]

Progress = Callable[[str], None]

_POM = Path(__file__).with_name("kafka-dist.pom.xml")
_REQUIRED_JARS = ("kafka_2.13-{v}.jar", "kafka-clients-{v}.jar", "kafka-server-{v}.jar", "kafka-raft-{v}.jar")
_TARBALL_MIRRORS = (
    "https://downloads.apache.org/kafka/{v}/kafka_2.13-{v}.tgz",
    "https://archive.apache.org/dist/kafka/{v}/kafka_2.13-{v}.tgz",
)
_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c{1})%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
logger.broker.name = kafka.server.BrokerServer
logger.broker.level = INFO
"""


def _quiet(_: str) -> None:
    return None


def cache_root() -> Path:
    """museflow's cache directory (``$XDG_CACHE_HOME/museflow`` or ``~/.cache/museflow``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "museflow"


def kafka_version() -> str:
    """The Kafka version pinned in the pom kept in the repo."""
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", _POM.read_text())
    if not match:
        raise BrokerLaunchError(f"{_POM} has no <kafka.version>; the packaged pom is damaged")
    return match.group(1)


@dataclass(frozen=True)
class KafkaDistribution:
    """Where the broker's jars are and how they were found."""

    version: str
    libs_dir: Path
    source: str

    def classpath(self) -> str:
        return str(self.libs_dir / "*")


def locate_distribution(*, fetch: bool = True, progress: Progress = _quiet) -> KafkaDistribution:
    """Find the broker jars (``KAFKA_HOME``, then the cache), fetching them once if allowed."""
    version = kafka_version()
    home = os.environ.get("KAFKA_HOME")
    if home:
        libs = Path(home) / "libs"
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise BrokerLaunchError(
                f"KAFKA_HOME={home} has no libs/kafka_2.13-*.jar; point it at an unpacked Kafka "
                "distribution or unset it to let museflow fetch one"
            )
        return KafkaDistribution(version="KAFKA_HOME", libs_dir=libs, source="KAFKA_HOME")
    libs = cache_root() / "kafka" / version / "libs"
    if (libs / "manifest.json").exists():
        _verify_manifest(libs)
        return KafkaDistribution(version=version, libs_dir=libs, source="cache")
    if not fetch:
        raise BrokerLaunchError(f"Kafka {version} is not in the cache ({libs}) and fetching is disabled")
    return _fetch(version, libs, progress)


def _fetch(version: str, libs: Path, progress: Progress) -> KafkaDistribution:
    staging = Path(tempfile.mkdtemp(prefix="kafka-fetch-", dir=_ensure_dir(libs.parent.parent)))
    failures: list[str] = []
    try:
        for source, fetcher in (("maven", _fetch_with_maven), ("tarball", _fetch_tarball)):
            try:
                fetcher(version, staging, progress)
            except BrokerLaunchError as exc:
                failures.append(f"{source}: {exc}")
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
                continue
            _check_required(version, staging)
            _write_manifest(staging)
            if libs.exists():
                shutil.rmtree(libs)
            libs.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(libs)
            progress(f"Kafka {version} ready in {libs} (from {source})")
            return KafkaDistribution(version=version, libs_dir=libs, source=source)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    raise BrokerLaunchError(
        f"could not fetch Kafka {version}: " + "; ".join(failures)
        + ". Install Maven (apt-get install maven) or set KAFKA_HOME to an unpacked Kafka."
    )


def _fetch_with_maven(version: str, dest: Path, progress: Progress) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerLaunchError("mvn is not on PATH")
    progress(f"fetching Kafka {version} jars from Maven Central with mvn (once)")
    cmd = [
        mvn, "-B", "--strict-checksums", "-f", str(_POM),
        "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={dest}",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    downloaded = 0
    for line in proc.stdout:
        tail = [*tail[-30:], line.rstrip()]
        if "Downloaded from" in line:
            downloaded += 1
            progress(f"downloaded {downloaded} artifacts: {line.rsplit('/', 1)[-1].split(' ')[0]}")
        elif "Copying" in line:
            progress(line.strip().removeprefix("[INFO] "))
    if proc.wait() != 0:
        raise BrokerLaunchError("mvn failed:\n" + "\n".join(tail[-15:]))


def _fetch_tarball(version: str, dest: Path, progress: Progress) -> None:
    errors = []
    for template in _TARBALL_MIRRORS:
        url = template.format(v=version)
        try:
            progress(f"downloading {url}")
            with tempfile.TemporaryDirectory() as tmp:
                archive = Path(tmp) / "kafka.tgz"
                _download(url, archive, progress)
                with urllib.request.urlopen(url + ".sha512", timeout=30) as resp:  # noqa: S310 - fixed https URL
                    expected = "".join(resp.read().decode().split(":")[-1].split()).lower()
                actual = hashlib.sha512(archive.read_bytes()).hexdigest()
                if actual != expected:
                    raise BrokerLaunchError(f"{url}: SHA-512 mismatch ({actual[:16]}... != {expected[:16]}...)")
                with tarfile.open(archive) as tar:
                    members = [m for m in tar.getmembers() if "/libs/" in m.name and m.isfile()]
                    for member in members:
                        member.name = Path(member.name).name
                        tar.extract(member, dest, filter="data")
                return
        except (OSError, tarfile.TarError) as exc:
            errors.append(f"{url}: {exc}")
    raise BrokerLaunchError("; ".join(errors))


def _download(url: str, target: Path, progress: Progress) -> None:
    with urllib.request.urlopen(url, timeout=30) as resp, target.open("wb") as out:  # noqa: S310
        total = int(resp.headers.get("Content-Length") or 0)
        done = 0
        while chunk := resp.read(1 << 20):
            out.write(chunk)
            done += len(chunk)
            if total:
                progress(f"{done >> 20}/{total >> 20} MiB")


def _check_required(version: str, libs: Path) -> None:
    missing = [name.format(v=version) for name in _REQUIRED_JARS if not (libs / name.format(v=version)).exists()]
    if missing:
        raise BrokerLaunchError(f"fetched Kafka is incomplete, missing {missing} in {libs}")


def _write_manifest(libs: Path) -> None:
    digests = {jar.name: _sha256(jar) for jar in sorted(libs.glob("*.jar"))}
    (libs / "manifest.json").write_text(json.dumps(digests, indent=1))


def _verify_manifest(libs: Path) -> None:
    manifest = json.loads((libs / "manifest.json").read_text())
    for name, digest in manifest.items():
        jar = libs / name
        if not jar.exists() or _sha256(jar) != digest:
            raise BrokerLaunchError(
                f"cached Kafka jar {jar} is missing or altered; delete {libs.parent} to fetch it again"
            )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def java_major_version() -> int:
    """The major version of ``java`` on PATH; a clear error if there is none or it is too old."""
    java = shutil.which("java")
    if not java:
        raise BrokerLaunchError(
            "java is not on PATH: install a JRE >= 17 (e.g. apt-get install openjdk-17-jre-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise BrokerLaunchError(f"cannot read the Java version from `java -version`: {out.strip()[:200]}")
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    if major < 17:
        raise BrokerLaunchError(f"java {major} is too old for Kafka 4: install a JRE >= 17")
    return major


@dataclass
class BrokerInstance:
    """A started broker, as recorded in its ``instance.json``."""

    name: str
    pid: int
    port: int
    controller_port: int
    data_dir: str
    log_path: str
    started_at: float
    kafka_version: str
    sasl_port: int = 0
    ssl_port: int = 0

    @property
    def sasl_bootstrap(self) -> str:
        """The SASL_PLAINTEXT listener (PLAIN and SCRAM-SHA-256), when started with ``sasl_users``."""
        return f"127.0.0.1:{self.sasl_port}" if self.sasl_port else ""

    @property
    def ssl_bootstrap(self) -> str:
        """The SSL listener (server-authenticated TLS), when started with ``tls``."""
        return f"127.0.0.1:{self.ssl_port}" if self.ssl_port else ""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class TlsFiles:
    """The broker's TLS identity for an SSL listener: PEM files signed by a CA its clients trust.

    ``certfile`` holds the broker's certificate (then any intermediates), valid for ``127.0.0.1``;
    ``keyfile`` its unencrypted PKCS#8 private key (``-----BEGIN PRIVATE KEY-----``), the form
    Kafka's PEM keystore reads.
    """

    certfile: Path
    keyfile: Path


class LocalKafka:
    """Start, inspect and stop one named local broker instance.

    Alone it is a one-node cluster; :class:`LocalCluster` makes several of them one cluster by
    giving each its ``node_id``, the shared ``quorum_voters`` and ``cluster_id``, and the
    ``replication`` of the internal topics.
    """

    def __init__(
        self,
        name: str = "default",
        *,
        home: Path | None = None,
        port: int = 0,
        controller_port: int = 0,
        heap: str = "768m",
        sasl_users: Mapping[str, str] | None = None,
        sasl_port: int = 0,
        authorizer: bool = False,
        tls: TlsFiles | None = None,
        ssl_port: int = 0,
        node_id: int = 1,
        quorum_voters: str = "",
        cluster_id: str = "",
        replication: int = 1,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise BrokerLaunchError(f"instance name {name!r} may only hold letters, digits, '.', '_' and '-'")
        if quorum_voters and not (port and controller_port):
            raise BrokerLaunchError("a node of a cluster needs fixed ports (the quorum names its controller port)")
        self.name = name
        self.node_id = node_id
        self.quorum_voters = quorum_voters
        self.cluster_id = cluster_id
        self.replication = replication
        self.home = home or cache_root() / "instances" / name
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.sasl_users = dict(sasl_users or {})
        self.sasl_port = sasl_port
        self.authorizer = authorizer
        self.tls = tls
        self.ssl_port = ssl_port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def state_path(self) -> Path:
        return self.home / "instance.json"

    def instance(self) -> BrokerInstance | None:
        """The recorded instance, or ``None`` when it was never started or was stopped."""
        try:
            return BrokerInstance(**json.loads(self.state_path.read_text()))
        except FileNotFoundError:
            return None

    def start(self, *, timeout: float = 90.0, progress: Progress = _quiet, wait: bool = True) -> BrokerInstance:
        """Start the broker (fetching Kafka once) and return when it answers metadata.

        ``wait=False`` returns once the process runs: a node of a cluster cannot answer before a
        majority of the controllers is up, so :class:`LocalCluster` launches them all, then waits.
        """
        current = self.instance()
        if current and _alive(current.pid):
            raise BrokerLaunchError(
                f"instance {self.name!r} is already running at {current.bootstrap} (pid {current.pid}); "
                f"run `museflow kafka stop --name {self.name}` first"
            )
        java_major_version()
        dist = locate_distribution(progress=progress)
        port = _claim_port(self.port)
        controller_port = _claim_port(self.controller_port, avoid={port})
        sasl_port = _claim_port(self.sasl_port, avoid={port, controller_port}) if self.sasl_users else 0
        ssl_port = _claim_port(self.ssl_port, avoid={port, controller_port, sasl_port}) if self.tls else 0
        data_dir = _ensure_dir(self.home / "data")
        config = self._write_config(data_dir, port, controller_port)
        if sasl_port:
            self._add_sasl_listener(config, port, controller_port, sasl_port)
        if self.tls:
            self._add_ssl_listener(config, ssl_port, self.tls)
        if self.authorizer:
            self._add_authorizer(config)
        if not (data_dir / "meta.properties").exists():
            self._format(dist, config)
        log_path = self.home / "kafka.log"
        progress(f"starting Kafka {dist.version} on 127.0.0.1:{port}")
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [
                    "java", f"-Xmx{self.heap}", "-Xms256m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                    "-cp", dist.classpath(), "kafka.Kafka", str(config),
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self._proc = proc
        inst = BrokerInstance(
            name=self.name, pid=proc.pid, port=port, controller_port=controller_port,
            data_dir=str(data_dir), log_path=str(log_path), started_at=time.time(),
            kafka_version=dist.version, sasl_port=sasl_port, ssl_port=ssl_port,
        )
        self.state_path.write_text(json.dumps(asdict(inst), indent=1))
        if wait:
            self.wait_ready(timeout)
        return inst

    def wait_ready(self, timeout: float = 90.0) -> BrokerInstance:
        """Return once the started broker answers metadata; stop it and raise if it does not."""
        inst = self.instance()
        if inst is None or self._proc is None:
            raise BrokerLaunchError(f"instance {self.name!r} was not started by this process")
        try:
            _wait_until_ready(inst, self._proc, timeout)
        except BrokerLaunchError:
            self.stop()
            raise
        return inst

    def _write_config(self, data_dir: Path, port: int, controller_port: int) -> Path:
        config = self.home / "server.properties"
        rf = self.replication
        min_isr = 2 if rf >= 3 else 1
        config.write_text(
            "\n".join([
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                f"controller.quorum.voters={self.quorum_voters or f'{self.node_id}@127.0.0.1:{controller_port}'}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={data_dir}",
                f"offsets.topic.replication.factor={rf}",
                "offsets.topic.num.partitions=10",
                f"transaction.state.log.replication.factor={rf}",
                f"transaction.state.log.min.isr={min_isr}",
                "transaction.state.log.num.partitions=4",
                f"share.coordinator.state.topic.replication.factor={rf}",
                f"share.coordinator.state.topic.min.isr={min_isr}",
                f"default.replication.factor={rf}",
                f"min.insync.replicas={min_isr}",
                "unclean.leader.election.enable=false",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "num.partitions=1",
                "log.cleaner.backoff.ms=1000",
                "message.max.bytes=1048588",
                "",
            ])
        )
        (self.home / "log4j2.properties").write_text(_LOG4J2)
        return config

    def _add_sasl_listener(self, config: Path, port: int, controller_port: int, sasl_port: int) -> None:
        """A SASL_PLAINTEXT listener for clients (PLAIN and SCRAM-SHA-256 users); the controller and
        inter-broker traffic stay on PLAINTEXT. SCRAM credentials are written at format time."""
        plain_users = " ".join(f'user_{name}="{_jaas_quote(pw)}"' for name, pw in self.sasl_users.items())
        lines = config.read_text().splitlines()
        lines = [line for line in lines if not line.startswith(("listeners=", "advertised.listeners=",
                                                                  "listener.security.protocol.map="))]
        lines += [
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port},"
            f"SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
            "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "",
        ]
        config.write_text("\n".join(lines))

    def _add_ssl_listener(self, config: Path, ssl_port: int, tls: TlsFiles) -> None:
        """An SSL listener for clients (the broker authenticates; clients need no certificate). Its PEM
        keystore is the key and certificate chain in one file, owner-only, in the instance's directory;
        the controller and inter-broker traffic stay on PLAINTEXT."""
        keystore = self.home / "ssl-keystore.pem"
        keystore.touch(mode=0o600)
        keystore.chmod(0o600)
        keystore.write_text(Path(tls.keyfile).read_text() + Path(tls.certfile).read_text())
        listener = f"SSL://127.0.0.1:{ssl_port}"
        appended = {"listeners=": listener, "advertised.listeners=": listener,
                    "listener.security.protocol.map=": "SSL:SSL"}
        lines = [next((f"{line},{extra}" for prefix, extra in appended.items() if line.startswith(prefix)), line)
                 for line in config.read_text().splitlines()]
        lines += [
            "listener.name.ssl.ssl.keystore.type=PEM",
            f"listener.name.ssl.ssl.keystore.location={keystore}",
            "listener.name.ssl.ssl.client.auth=none",
            "",
        ]
        config.write_text("\n".join(lines))

    def _add_authorizer(self, config: Path) -> None:
        """KRaft's StandardAuthorizer: ACLs are enforced on the SASL listener's users; the PLAINTEXT
        and controller listeners (principal ``User:ANONYMOUS``) stay super users, as the local admin."""
        config.write_text(config.read_text() + "\n".join([
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users=User:ANONYMOUS",
            "allow.everyone.if.no.acl.found=false",
            "",
        ]))

    def _format(self, dist: KafkaDistribution, config: Path) -> None:
        cluster_id = self.cluster_id or new_cluster_id()
        scram = [arg for name, pw in self.sasl_users.items()
                 for arg in ("--add-scram", f"SCRAM-SHA-256=[name={name},password={pw}]")]
        result = subprocess.run(
            ["java", "-cp", dist.classpath(), "kafka.tools.StorageTool", "format",
             f"--cluster-id={cluster_id}", "-c", str(config), *scram],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise BrokerLaunchError(f"formatting the KRaft storage failed:\n{(result.stdout + result.stderr)[-2000:]}")

    def stop(self, *, timeout: float = 30.0) -> str:
        """Stop the broker (SIGTERM, then SIGKILL); cleans up after a crashed instance too."""
        inst = self.instance()
        if inst is None:
            return f"instance {self.name!r} is not running"
        if not _alive(inst.pid):
            self.state_path.unlink(missing_ok=True)
            return f"instance {self.name!r} (pid {inst.pid}) had already exited; cleaned up its state"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(inst.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(inst.pid) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        how = "stopped"
        if _alive(inst.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(inst.pid, signal.SIGKILL)
            how = f"killed after not stopping within {timeout:.0f}s"
            while _alive(inst.pid):
                self._reap()
                time.sleep(0.05)
        self._reap()
        self.state_path.unlink(missing_ok=True)
        return f"instance {self.name!r} (pid {inst.pid}) {how}"

    def kill(self) -> str:
        """``kill -9`` of the broker (a crash: no controlled shutdown, no flush); forgets its state."""
        inst = self.instance()
        if inst is None:
            return f"instance {self.name!r} is not running"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(inst.pid, signal.SIGKILL)
        while _alive(inst.pid):
            self._reap()
            time.sleep(0.05)
        self._reap()
        self.state_path.unlink(missing_ok=True)
        return f"instance {self.name!r} (pid {inst.pid}) killed"

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.poll()

    def status(self) -> dict[str, Any]:
        """Recorded state plus whether the process lives and the broker answers."""
        inst = self.instance()
        if inst is None:
            return {"name": self.name, "state": "stopped"}
        alive = _alive(inst.pid)
        answers = alive and _metadata_answers(inst.bootstrap, 3.0)
        state = "running" if answers else ("unresponsive" if alive else "crashed")
        return {**asdict(inst), "bootstrap": inst.bootstrap, "state": state}

    def destroy(self) -> None:
        """Stop and delete the instance's directory (data included)."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def new_cluster_id() -> str:
    """A random KRaft cluster id (a base64url UUID, as ``kafka-storage random-uuid`` makes)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class ClusterInstance:
    """A started cluster: its id and the nodes that run."""

    name: str
    cluster_id: str
    nodes: list[BrokerInstance]

    @property
    def bootstrap(self) -> str:
        """Every node's client listener, comma-separated (``bootstrap.servers``)."""
        return ",".join(node.bootstrap for node in self.nodes)


class LocalCluster:
    """A local KRaft cluster of ``size`` combined broker+controller nodes (default 3).

    Static quorum (``controller.quorum.voters`` naming every node), one cluster id formatted on
    every node, internal topics (offsets, transaction state, share state) and the default topic
    at replication factor 3 with ``min.insync.replicas=2`` (and the transaction log's min ISR 2):
    an ``acks=all`` write survives the loss of any one node, and with one node down the cluster
    still has a controller majority and an ISR of two for every partition. Ports and the cluster
    id are recorded in ``cluster.json`` under ``home`` so a stopped or killed node comes back with
    the same identity; node ``i`` lives in ``home/node-<i>``.
    """

    def __init__(self, name: str = "default", *, home: Path | None = None, size: int = 3, heap: str = "512m",
                 port: int = 0, controller_port: int = 0) -> None:
        if size < 3:
            raise BrokerLaunchError(f"a cluster needs at least 3 nodes (got {size}); "
                                    "for one broker use --brokers 1 (LocalKafka)")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise BrokerLaunchError(f"cluster name {name!r} may only hold letters, digits, '.', '_' and '-'")
        self.name = name
        self.home = home or cache_root() / "instances" / name
        self.size = size
        self.heap = heap
        self.port = port
        self.controller_port = controller_port
        self._nodes: dict[int, LocalKafka] = {}

    @property
    def layout_path(self) -> Path:
        return self.home / "cluster.json"

    def layout(self) -> dict[str, Any] | None:
        """The recorded cluster id and ports, or ``None`` before the first start."""
        try:
            layout: dict[str, Any] = json.loads(self.layout_path.read_text())
        except FileNotFoundError:
            return None
        return layout

    @property
    def node_ids(self) -> list[int]:
        layout = self.layout()
        return [n for n, _ in _by_node(layout)] if layout else list(range(1, self.size + 1))

    def node(self, node_id: int) -> LocalKafka:
        """The launcher of one node (the same object across calls: it holds the child process)."""
        layout = self.layout()
        if layout is None:
            raise BrokerLaunchError(f"cluster {self.name!r} was never started (no {self.layout_path})")
        if node_id not in self._nodes:
            if str(node_id) not in layout["ports"]:
                raise BrokerLaunchError(f"cluster {self.name!r} has no node {node_id}; nodes are {self.node_ids}")
            port, controller_port = layout["ports"][str(node_id)]
            voters = ",".join(f"{n}@127.0.0.1:{ports[1]}" for n, ports in _by_node(layout))
            self._nodes[node_id] = LocalKafka(
                f"{self.name}-{node_id}", home=self.home / f"node-{node_id}", port=port,
                controller_port=controller_port, heap=self.heap, node_id=node_id, quorum_voters=voters,
                cluster_id=layout["cluster_id"], replication=min(3, len(layout["ports"])))
        return self._nodes[node_id]

    @property
    def bootstrap(self) -> str:
        layout = self.layout()
        if layout is None:
            return ""
        return ",".join(f"127.0.0.1:{ports[0]}" for _, ports in _by_node(layout))

    def _plan(self) -> None:
        if self.layout() is not None:
            return
        self.home.mkdir(parents=True, exist_ok=True)
        taken: set[int] = set()
        ports: dict[str, list[int]] = {}
        for i in range(self.size):
            client = _claim_port(self.port + i if self.port else 0, avoid=taken)
            taken.add(client)
            controller = _claim_port(self.controller_port + i if self.controller_port else 0, avoid=taken)
            taken.add(controller)
            ports[str(i + 1)] = [client, controller]
        self.layout_path.write_text(json.dumps({"name": self.name, "cluster_id": new_cluster_id(),
                                                "ports": ports}, indent=1))

    def start(self, *, timeout: float = 180.0, progress: Progress = _quiet) -> ClusterInstance:
        """Start every node that does not run (together: a node waits for a controller majority)."""
        java_major_version()
        locate_distribution(progress=progress)
        self._plan()
        launched = []
        try:
            for node_id in self.node_ids:
                node = self.node(node_id)
                current = node.instance()
                if current and _alive(current.pid):
                    continue
                progress(f"starting node {node_id} of cluster {self.name!r}")
                node.start(timeout=timeout, progress=progress, wait=False)
                launched.append(node)
            deadline = time.monotonic() + timeout
            for node in launched:
                node.wait_ready(max(1.0, deadline - time.monotonic()))
            self.wait_brokers(len(self.node_ids), max(1.0, deadline - time.monotonic()))
        except BrokerLaunchError:
            self.stop()
            raise
        return self.instance()

    def instance(self) -> ClusterInstance:
        layout = self.layout()
        nodes = [inst for n in self.node_ids if (inst := self.node(n).instance()) is not None and _alive(inst.pid)]
        return ClusterInstance(self.name, layout["cluster_id"] if layout else "", nodes)

    def wait_brokers(self, count: int, timeout: float = 60.0) -> None:
        """Wait until the cluster's metadata lists ``count`` live brokers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.live_brokers()) >= count:
                return
            time.sleep(0.5)
        raise BrokerLaunchError(f"cluster {self.name!r} did not list {count} brokers within {timeout:.0f}s "
                                f"(it lists {sorted(self.live_brokers())})")

    def live_brokers(self) -> set[int]:
        """Node ids of the brokers the cluster's metadata lists (registered and unfenced)."""
        metadata = _metadata(self.bootstrap, 5.0)
        return set(metadata.brokers) if metadata is not None else set()

    def start_node(self, node_id: int, *, timeout: float = 120.0) -> BrokerInstance:
        """Start one node (the others must hold a controller majority) and wait until it is listed."""
        inst = self.node(node_id).start(timeout=timeout)
        deadline = time.monotonic() + timeout
        while node_id not in self.live_brokers():
            if time.monotonic() > deadline:
                raise BrokerLaunchError(f"node {node_id} of {self.name!r} answers but is not listed as a broker")
            time.sleep(0.5)
        return inst

    def stop_node(self, node_id: int, *, timeout: float = 30.0) -> str:
        """Graceful stop of one node (SIGTERM: controlled shutdown moves its leaderships first)."""
        return self.node(node_id).stop(timeout=timeout)

    def kill_node(self, node_id: int) -> str:
        """``kill -9`` of one node: a crash, its leaderships move once the controller fences it."""
        return self.node(node_id).kill()

    def stop(self, *, timeout: float = 30.0) -> str:
        """Stop every node at once (SIGTERM, SIGKILL after ``timeout``)."""
        if self.layout() is None:
            return f"cluster {self.name!r} is not running"
        nodes = [self.node(n) for n in self.node_ids]
        with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
            results = list(pool.map(lambda node: node.stop(timeout=timeout), nodes))
        return "\n".join(results)

    def kill(self) -> str:
        """``kill -9`` of every node."""
        if self.layout() is None:
            return f"cluster {self.name!r} is not running"
        return "\n".join(self.node(n).kill() for n in self.node_ids)

    def active_controller(self) -> int | None:
        """The node id of the quorum's leader (the active controller), ``None`` while there is none.

        Read from the nodes' persisted KRaft election state (``__cluster_metadata-0/quorum-state``),
        newest epoch first: a broker's metadata and ``DescribeCluster`` answers name a random live
        broker as "controller" in KRaft, not the active controller.
        """
        best: tuple[int, int] | None = None
        for node_id in self.node_ids:
            node = self.node(node_id)
            inst = node.instance()
            if inst is None or not _alive(inst.pid):
                continue
            state = _quorum_state(Path(inst.data_dir))
            if state is None:
                continue
            epoch, leader = state
            if leader >= 0 and (best is None or epoch > best[0]):
                best = (epoch, leader)
        if best is None:
            return None
        leader_inst = self.node(best[1]).instance()
        return best[1] if leader_inst is not None and _alive(leader_inst.pid) else None

    def partition_leader(self, topic: str, partition: int = 0, timeout: float = 10.0) -> int:
        """The node id leading ``topic``'s ``partition`` per the cluster's metadata (-1: no leader)."""
        leaders = self.partition_leaders(topic, timeout)
        if partition not in leaders:
            raise BrokerLaunchError(f"cluster {self.name!r} has no partition {topic}[{partition}]")
        return leaders[partition]

    def partition_leaders(self, topic: str, timeout: float = 10.0) -> dict[int, int]:
        """Partition -> the node id leading it (-1: none), per the cluster's metadata."""
        metadata = _metadata(self.bootstrap, timeout, topic)
        info = metadata.topics.get(topic) if metadata is not None else None
        if info is None or info.error is not None:
            raise BrokerLaunchError(f"cluster {self.name!r} has no metadata for topic {topic}")
        return {p: int(meta.leader) for p, meta in info.partitions.items()}

    def under_replicated(self, timeout: float = 10.0) -> int:
        """Partitions (internal topics included) whose ISR is smaller than their replicas; -1: unreadable."""
        metadata = _metadata(self.bootstrap, timeout)
        if metadata is None:
            return -1
        return sum(1 for topic in metadata.topics.values() for p in topic.partitions.values()
                   if len(p.isrs) < len(p.replicas))

    def status(self) -> dict[str, Any]:
        """Per-node state, the bootstrap list and the active controller; ``state`` sums them up."""
        layout = self.layout()
        if layout is None:
            return {"name": self.name, "state": "stopped", "brokers": self.size, "nodes": []}
        nodes = []
        for node_id in self.node_ids:
            info = self.node(node_id).status()
            nodes.append({**info, "node_id": node_id})
        states = {n["state"] for n in nodes}
        state = "running" if states == {"running"} else "stopped" if states == {"stopped"} else "degraded"
        controller = self.active_controller() if state != "stopped" else None
        return {"name": self.name, "state": state, "cluster_id": layout["cluster_id"], "bootstrap": self.bootstrap,
                "brokers": len(nodes), "controller": controller, "nodes": nodes}

    def destroy(self) -> None:
        """Stop every node and delete the cluster's directory (data included)."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def _by_node(layout: Mapping[str, Any]) -> list[tuple[int, list[int]]]:
    """(node id, [client port, controller port]) in node order."""
    return sorted(((int(n), list(ports)) for n, ports in layout["ports"].items()), key=lambda item: item[0])


def _quorum_state(data_dir: Path) -> tuple[int, int] | None:
    """(leader epoch, leader id) from a node's KRaft ``quorum-state`` file."""
    try:
        state = json.loads((data_dir / "__cluster_metadata-0" / "quorum-state").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return int(state.get("leaderEpoch", -1)), int(state.get("leaderId", -1))


def _metadata(bootstrap: str, timeout: float, topic: str | None = None) -> Any:
    from confluent_kafka.admin import AdminClient

    if not bootstrap:
        return None
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "log_level": 0, "logger": _NullLogger()}
    admin = AdminClient(conf)
    try:
        return admin.list_topics(topic, timeout=timeout) if topic else admin.list_topics(timeout=timeout)
    except Exception:
        return None


def _jaas_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _claim_port(port: int, avoid: set[int] | frozenset[int] = frozenset()) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if port:  # a fixed port coming back after a stop: connections in TIME_WAIT must not block it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise BrokerLaunchError(
                f"port {port} on 127.0.0.1 is busy ({exc.strerror}); stop what holds it or use --port 0"
            ) from exc
        chosen = int(sock.getsockname()[1])
    if chosen in avoid:
        return _claim_port(0, avoid)
    return chosen


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _metadata_answers(bootstrap: str, timeout: float) -> bool:
    from confluent_kafka.admin import AdminClient

    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "log_level": 0, "logger": _NullLogger()}
    admin = AdminClient(conf)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception:
        return False
    return bool(metadata.brokers)


class _NullLogger:
    """Silences librdkafka's connection-refused noise while the broker boots."""

    def log(self, *args: Any, **kwargs: Any) -> None:
        return None


def _wait_until_ready(inst: BrokerInstance, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerLaunchError(
                f"Kafka exited with code {proc.returncode} while starting; last lines of {inst.log_path}:\n"
                + _tail(Path(inst.log_path))
            )
        if _port_open(inst.port) and _metadata_answers(inst.bootstrap, 2.0):
            return
        time.sleep(0.25)
    raise BrokerLaunchError(
        f"Kafka did not answer metadata on {inst.bootstrap} within {timeout:.0f}s; last lines of "
        f"{inst.log_path}:\n" + _tail(Path(inst.log_path))
    )


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"
