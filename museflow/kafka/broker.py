"""A real single-node Apache Kafka (KRaft) for development, the demo and the tests.

The broker distribution is found in this order: ``KAFKA_HOME``; the museflow cache
(``$XDG_CACHE_HOME/museflow/kafka/<version>``); otherwise it is fetched once — with ``mvn``
from Maven Central using the pom kept beside this module, or from the Apache release tarball
where the internet is reachable — and verified (Maven's strict checksums, or the release's
SHA-512; then a sha256 manifest of every jar that later starts re-check).

Each instance has its own directory (config, data, log, ``instance.json``), free ports by
default, listeners on 127.0.0.1, and :meth:`LocalKafka.start` returns only once the broker
answers metadata requests.
"""

from __future__ import annotations

import base64
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
    "KafkaDistribution",
    "LocalKafka",
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

    @property
    def sasl_bootstrap(self) -> str:
        """The SASL_PLAINTEXT listener (PLAIN and SCRAM-SHA-256), when started with ``sasl_users``."""
        return f"127.0.0.1:{self.sasl_port}" if self.sasl_port else ""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


class LocalKafka:
    """Start, inspect and stop one named local broker instance."""

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
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise BrokerLaunchError(f"instance name {name!r} may only hold letters, digits, '.', '_' and '-'")
        self.name = name
        self.home = home or cache_root() / "instances" / name
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.sasl_users = dict(sasl_users or {})
        self.sasl_port = sasl_port
        self.authorizer = authorizer
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

    def start(self, *, timeout: float = 90.0, progress: Progress = _quiet) -> BrokerInstance:
        """Start the broker (fetching Kafka once) and return when it answers metadata."""
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
        data_dir = _ensure_dir(self.home / "data")
        config = self._write_config(data_dir, port, controller_port)
        if sasl_port:
            self._add_sasl_listener(config, port, controller_port, sasl_port)
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
            kafka_version=dist.version, sasl_port=sasl_port,
        )
        self.state_path.write_text(json.dumps(asdict(inst), indent=1))
        try:
            _wait_until_ready(inst, proc, timeout)
        except BrokerLaunchError:
            self.stop()
            raise
        return inst

    def _write_config(self, data_dir: Path, port: int, controller_port: int) -> Path:
        config = self.home / "server.properties"
        config.write_text(
            "\n".join([
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={data_dir}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=4",
                "share.coordinator.state.topic.replication.factor=1",
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
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
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

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "logger": _NullLogger()})
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
