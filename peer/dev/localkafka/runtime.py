"""What a local broker runs on: a Java 17+ runtime and the Apache Kafka jars.

The jars come from one of two places:

* ``KAFKA_HOME`` naming an Apache Kafka install: its ``libs/`` directory is used as is;
* otherwise Maven resolves the pinned ``kafka_2.13`` artifact and a log4j2 binding into
  ``<cache>/kafka-<version>/libs``. A marker file written after a complete copy makes later
  calls a couple of ``stat`` calls, and a lock file keeps two processes from resolving at once.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from peer.errors import LocalKafkaError

#: Apache Kafka broker release (Maven artifact org.apache.kafka:kafka_<scala>:<version>)
KAFKA_VERSION: Final = "4.3.1"
SCALA_VERSION: Final = "2.13"
#: log4j2 runtime so the broker logs to a file; the 2.25 line is what Kafka 4.x builds against
LOG4J_VERSION: Final = "2.25.4"
#: Kafka 4.x brokers need Java 17 or newer
MIN_JAVA: Final = 17

Progress = Callable[[str], None]


def stderr_progress(line: str) -> None:
    """Default progress sink: one line on stderr."""
    print(line, file=sys.stderr, flush=True)


def quiet_progress(line: str) -> None:
    """A progress sink that drops everything."""


def cache_dir() -> Path:
    """Where downloads and default data live: ``$MDPEER_CACHE_DIR`` or ``~/.cache/mdpeer``."""
    env = os.environ.get("MDPEER_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mdpeer"


@dataclass(frozen=True, slots=True)
class KafkaJars:
    """A resolved Kafka runtime: the directory of jars and where it came from."""

    libs: Path
    version: str
    #: "maven" (the project cache) or "KAFKA_HOME"
    source: str

    @property
    def classpath(self) -> str:
        """A JVM class path naming every jar of ``libs`` (the JVM expands ``dir/*``)."""
        return str(self.libs / "*")


@dataclass(frozen=True, slots=True)
class Java:
    """A Java runtime fit for the broker."""

    path: str
    major: int
    #: the first line of ``java -version`` (identifies the exact build)
    build: str = ""


def find_java() -> Java:
    """Locate ``java`` (``$JAVA_HOME/bin/java``, else ``PATH``) and check it is Java 17+."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    path = str(candidate) if candidate and os.access(candidate, os.X_OK) else shutil.which("java")
    if path is None:
        raise LocalKafkaError(
            "java not found: the local Kafka broker needs a Java runtime (17 or newer)",
            hint="install one (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME",
        )
    try:
        out = subprocess.run(
            [path, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(
            f"java at {path} could not be run: {exc}", hint="check the Java install or JAVA_HOME"
        ) from None
    major = _java_major(out.stderr + out.stdout)
    if major is None:
        raise LocalKafkaError(
            f"java at {path} did not report a version", hint="check the Java install or JAVA_HOME"
        )
    if major < MIN_JAVA:
        raise LocalKafkaError(
            f"java at {path} is version {major}; Apache Kafka {KAFKA_VERSION} needs {MIN_JAVA}+",
            hint="install Java 17 or newer and put it first on PATH (or set JAVA_HOME)",
        )
    build = (out.stderr + out.stdout).strip().splitlines()[0]
    return Java(path=path, major=major, build=build)


def _java_major(version_output: str) -> int | None:
    # `java -version` prints e.g. 'openjdk version "17.0.15"' or, before Java 9, '"1.8.0_392"'.
    m = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if m is None:
        return None
    first = int(m.group(1))
    return int(m.group(2) or 0) if first == 1 else first


def resolve_jars(*, progress: Progress = stderr_progress) -> KafkaJars:
    """Return the Kafka jars, downloading them with Maven the first time.

    Idempotent: when the marker for :data:`KAFKA_VERSION` exists and its jars are all present
    this does no I/O beyond a few ``stat`` calls and never runs Maven.
    """
    home = os.environ.get("KAFKA_HOME")
    if home:
        return _kafka_home_jars(Path(home).expanduser())
    return resolve_jar_set(BROKER_JARS, progress=progress)


@dataclass(frozen=True, slots=True)
class JarSet:
    """Jars Maven resolves into the cache: the broker's, or an optional set on demand (the
    Kafka Connect runtime, :mod:`peer.dev.localkafka.connect`), each with its own pom, marker
    and Maven log under ``<cache>/kafka-<version>/``, names starting with ``prefix``."""

    prefix: str
    #: the generated pom.xml
    pom: str
    #: what it is, for messages (e.g. ``org.apache.kafka:kafka_2.13:4.3.1``)
    what: str

    def path(self, root: Path, name: str) -> Path:
        return root / f"{self.prefix}{name}"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.pom.encode()).hexdigest()[:16]


def resolve_jar_set(jar_set: JarSet, *, progress: Progress = stderr_progress) -> KafkaJars:
    """The jars of ``jar_set``, resolved with Maven the first time (see :func:`resolve_jars`)."""
    root = cache_dir() / f"kafka-{KAFKA_VERSION}"
    cached = _cached(root, jar_set)
    if cached is not None:
        return cached
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        cached = _cached(root, jar_set)  # another process may have finished while we waited
        if cached is not None:
            return cached
        return _maven_resolve(root, jar_set, progress)


def _kafka_home_jars(home: Path) -> KafkaJars:
    libs = home / "libs"
    server_jars = sorted(libs.glob("kafka_*.jar")) if libs.is_dir() else []
    server_jars = [
        j for j in server_jars if not j.name.endswith(("-sources.jar", "-javadoc.jar", "-test.jar"))
    ]
    if not server_jars:
        raise LocalKafkaError(
            f"KAFKA_HOME={str(home)!r} is not an Apache Kafka install (no libs/kafka_*.jar)",
            hint="point KAFKA_HOME at an unpacked Apache Kafka 4.x release, or unset it to use "
            "the Maven-resolved jars",
        )
    m = re.match(r"kafka_[\d.]+-(.+)\.jar$", server_jars[0].name)
    version = m.group(1) if m else "unknown"
    if not version.startswith("4."):
        raise LocalKafkaError(
            f"KAFKA_HOME={str(home)!r} holds Apache Kafka {version}; mdpeer needs 4.x (KRaft)",
            hint="point KAFKA_HOME at an Apache Kafka 4.x release, or unset it",
        )
    return KafkaJars(libs=libs, version=version, source="KAFKA_HOME")


def _cached(root: Path, jar_set: JarSet) -> KafkaJars | None:
    try:
        data = json.loads(jar_set.path(root, "resolved.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    libs = jar_set.path(root, "libs")
    jars = data.get("jars") if isinstance(data, dict) else None
    if data.get("version") != KAFKA_VERSION or not isinstance(jars, list) or not jars:
        return None
    if data.get("pom") != jar_set.digest:
        return None  # resolved from an older dependency list: resolve again
    if not all((libs / str(name)).is_file() for name in jars):
        return None
    return KafkaJars(libs=libs, version=KAFKA_VERSION, source="maven")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_POM_HEAD: Final = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by mdpeer: {purpose}. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>mdpeer.localkafka</groupId>
  <artifactId>{artifact}</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
"""


def maven_dependency(
    artifact: str,
    *,
    group: str = "org.apache.kafka",
    version: str = KAFKA_VERSION,
    exclude: tuple[str, ...] = (),
) -> str:
    """One ``<dependency>`` element of a generated pom; ``exclude``: Kafka artifacts left out
    of its transitive class path."""
    exclusions = "".join(
        "        <exclusion>\n"
        "          <groupId>org.apache.kafka</groupId>\n"
        f"          <artifactId>{name}</artifactId>\n"
        "        </exclusion>\n"
        for name in exclude
    )
    if exclusions:
        exclusions = f"      <exclusions>\n{exclusions}      </exclusions>\n"
    return (
        "    <dependency>\n"
        f"      <groupId>{group}</groupId>\n"
        f"      <artifactId>{artifact}</artifactId>\n"
        f"      <version>{version}</version>\n"
        f"{exclusions}"
        "    </dependency>\n"
    )


def maven_pom(artifact: str, purpose: str, dependencies: str) -> str:
    """A pom.xml whose runtime class path is ``dependencies`` (``<dependency>`` elements)
    of the pinned release, with log4j2 as Kafka's logging."""
    head = _POM_HEAD.format(purpose=purpose, artifact=artifact, kafka=KAFKA_VERSION)
    log4j = "org.apache.logging.log4j"
    return (
        head
        + dependencies
        + maven_dependency("log4j-core", group=log4j, version=LOG4J_VERSION)
        # Kafka logs through slf4j 1.x; this binds it to log4j2
        + maven_dependency("log4j-slf4j-impl", group=log4j, version=LOG4J_VERSION)
        + "  </dependencies>\n</project>\n"
    )


_BROKER_DEPENDENCIES: Final = (
    maven_dependency(f"kafka_{SCALA_VERSION}")
    # Kafka's command-line tools (`mdpeer kafka tool`, and ProducerPerformance for
    # scripts/bench.py); Kafka's own release ships them in libs/ too. Without the Connect
    # runtime (Jetty, Jersey, ...): only Kafka Connect's own tools use it, and mdpeer replaces
    # a connector rather than running one (peer.dev.localkafka.connect adds it on demand).
    + maven_dependency("kafka-tools", exclude=("connect-runtime",))
    # org.apache.kafka.shell.MetadataShell, for `mdpeer kafka tool kafka-metadata-shell`
    + maven_dependency("kafka-shell")
)


#: the broker's jars (and Kafka's tools): what ``mdpeer kafka install`` resolves
BROKER_JARS: Final = JarSet(
    prefix="",
    pom=maven_pom(
        "kafka-runtime",
        "the runtime class path of a local Apache Kafka broker",
        _BROKER_DEPENDENCIES,
    ),
    what=f"org.apache.kafka:kafka_{SCALA_VERSION}:{KAFKA_VERSION}",
)


def _maven_resolve(root: Path, jar_set: JarSet, progress: Progress) -> KafkaJars:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            f"mvn not found: Maven is needed once to download Apache Kafka {KAFKA_VERSION}",
            hint="install Maven (e.g. apt-get install maven), or set KAFKA_HOME to an "
            "Apache Kafka 4.x install",
        )
    pom = jar_set.path(root, "pom.xml")
    pom.write_text(jar_set.pom, encoding="utf-8")
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=root))
    log_path = jar_set.path(root, "maven.log")
    progress(
        f"localkafka: resolving {jar_set.what} with Maven into {root} "
        "(first time only; this can take a minute)"
    )
    started = time.monotonic()
    cmd = [
        mvn,
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    tail: collections.deque[str] = collections.deque(maxlen=30)
    downloaded = 0
    with log_path.open("w", encoding="utf-8") as log:
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                cwd=root,
            )
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise LocalKafkaError(
                f"mvn could not be run: {exc}", hint="check the Maven install"
            ) from None
        assert proc.stdout is not None
        with proc:
            for raw in proc.stdout:
                log.write(raw)
                line = raw.rstrip()
                tail.append(line)
                # batch mode (-B) prefixes every line with its level
                event = line.removeprefix("[INFO] ")
                if event.startswith("Downloaded from") and event.endswith(")"):
                    downloaded += 1
                    # 'Downloaded from <repo>: <url>/<file> (<size> at <rate>)'
                    name = event.split(" ")[3].rsplit("/", 1)[-1]
                    if name.endswith(".jar"):
                        progress(f"localkafka:   downloaded {name}")
            code = proc.wait()
    if code != 0:
        shutil.rmtree(staging, ignore_errors=True)
        errors = [ln for ln in tail if ln.startswith("[ERROR]")]
        cause = errors[0].removeprefix("[ERROR]").strip() if errors else f"exit code {code}"
        tail_text = "\n".join(f"  | {ln}" for ln in list(tail)[-15:])
        raise LocalKafkaError(
            f"Maven could not resolve {jar_set.what}: {cause}\n{tail_text}",
            hint=f"check network access to Maven's remote repository (or the mirrors in "
            f"~/.m2/settings.xml), or set KAFKA_HOME; full output in {log_path}",
        )
    jars = sorted(p.name for p in staging.glob("*.jar"))
    libs = jar_set.path(root, "libs")
    if libs.exists():
        shutil.rmtree(libs)
    staging.chmod(0o755)  # mkdtemp made it private; the jars are not secret
    staging.rename(libs)
    jar_set.path(root, "resolved.json").write_text(
        json.dumps(
            {"version": KAFKA_VERSION, "log4j": LOG4J_VERSION, "pom": jar_set.digest, "jars": jars},
            indent=1,
        ),
        encoding="utf-8",
    )
    progress(
        f"localkafka: {len(jars)} jars ready in {libs} "
        f"({downloaded} files downloaded, {time.monotonic() - started:.0f}s)"
    )
    return KafkaJars(libs=libs, version=KAFKA_VERSION, source="maven")


def class_sharing_enabled() -> bool:
    """Whether brokers use (and ``install`` builds) a class-data-sharing archive."""
    return os.environ.get("MDPEER_KAFKA_CDS", "1").strip().lower() not in {"0", "false", "no"}


def cds_archive(jars: KafkaJars, java: Java) -> Path:
    """Where the class-data-sharing archive for this Java build and these jars lives.

    The name hashes everything the JVM checks an archive against (it refuses, with a
    warning on stderr, an archive whose class path jars changed size or modification time),
    so a new Java or jars resolved again simply look for (and build) another file. It may not
    exist.
    """
    digest = hashlib.sha256(f"{java.path}\0{java.build}\0{jars.libs}".encode())
    for jar in sorted(jars.libs.glob("*.jar")):
        stat = jar.stat()
        digest.update(f"\0{jar.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return cache_dir() / f"kafka-{jars.version}" / f"cds-{digest.hexdigest()[:16]}.jsa"
