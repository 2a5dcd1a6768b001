"""A real Apache Kafka (KRaft) on loopback, for the demo and the tests.

The broker jars are resolved by Maven into a cache outside the repository (or taken from
``KAFKA_HOME``); nodes run as background JVMs whose pids, ports and command lines are kept
in a state file in the data directory, so any later shell can ``status``/``down`` them.

Typical use::

    from peer.dev.localkafka import LocalKafka

    cluster = LocalKafka(data_dir, nodes=3, port=19092).start()
    producer = Producer({"bootstrap.servers": cluster.bootstrap, ...})
    cluster.kill(2)       # SIGKILL: a crash
    cluster.restart(2)    # back, waits until it answers
    cluster.stop()

    secured = LocalKafka(data_dir, port=19092, secure=True).start()
    Producer(secured.client_config("peer"))   # TLS + SCRAM login as the user "peer"

See docs/LOCALKAFKA.md for the cache, the environment variables and the broker settings.
"""

from peer.dev.localkafka.cluster import Cluster, LocalKafka, default_data_dir
from peer.dev.localkafka.layout import PortInUseError, free_port_base
from peer.dev.localkafka.process import NodeNotReadyError, NodeStatus
from peer.dev.localkafka.runtime import (
    KAFKA_VERSION,
    LOG4J_VERSION,
    KafkaJars,
    cache_dir,
    find_java,
    quiet_progress,
    resolve_jars,
    stderr_progress,
)
from peer.dev.localkafka.secure import Security, librdkafka_config
from peer.dev.localkafka.start import start_on_free_ports

__all__ = [
    "KAFKA_VERSION",
    "LOG4J_VERSION",
    "Cluster",
    "KafkaJars",
    "LocalKafka",
    "NodeNotReadyError",
    "NodeStatus",
    "PortInUseError",
    "Security",
    "cache_dir",
    "default_data_dir",
    "find_java",
    "free_port_base",
    "librdkafka_config",
    "quiet_progress",
    "resolve_jars",
    "start_on_free_ports",
    "stderr_progress",
]
