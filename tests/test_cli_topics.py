"""Admin commands name the topics a deployment needs that do not exist, and can create them."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from peer.cli import app
from tests.fixtures.cli import Cli, runner
from tests.fixtures.kafka import GroupFactory, TopicFactory

pytestmark = pytest.mark.kafka


@pytest.fixture
def cli(
    kafka_bootstrap: str, kafka_admin: AdminClient, unique_group: GroupFactory
) -> Iterator[Cli]:
    c = Cli(kafka_bootstrap, unique_group("topics"))
    c("init", "--shards", "2")
    yield c
    with contextlib.suppress(Exception):
        kafka_admin.delete_topics([f"{c.group}.control"])


def absent(kafka_admin: AdminClient, topic: str) -> bool:
    return topic not in kafka_admin.list_topics(timeout=10).topics


def test_routes_add_names_a_missing_topic_and_what_the_cluster_will_do(
    cli: Cli, kafka_admin: AdminClient
) -> None:
    missing = f"t.absent.{uuid.uuid4().hex[:8]}"
    code, _out, err = cli("routes", "add", "/topics/a", missing)
    assert code == 0
    # The session broker keeps Kafka's default: auto.create.topics.enable=true.
    assert f"note: topic {missing} does not exist (target of /topics/a)" in err
    assert "the cluster creates it on first use (auto.create.topics.enable=true)" in err
    assert absent(kafka_admin, missing)  # looking did not create it
    result = cli.json("routes", "add", "/topics/a", missing, "--on-oversize", "skip")
    assert result["missing_topics"] == [
        {
            "topic": missing,
            "used_by": ["target of /topics/a"],
            "fate": "the cluster creates it on first use (auto.create.topics.enable=true)",
            "blocking": False,
            "visible": True,
        }
    ]


def test_under_topic_creation_never_a_missing_topic_is_a_warning(
    kafka_bootstrap: str, unique_group: GroupFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MDPEER_TOPIC_CREATION", "never")
    cli = Cli(kafka_bootstrap, unique_group("never"))
    cli("init", "--shards", "1")
    missing = f"t.absent.{uuid.uuid4().hex[:8]}"
    _code, _out, err = cli(
        "routes",
        "add",
        "/topics/b",
        "present-or-not",
        "--on-oversize",
        "dead-letter",
        "--dead-letter-topic",
        missing,
    )
    assert f"warning: topic {missing} does not exist (dead-letter of /topics/b)" in err
    assert "its routes stop at their checkpoints until it exists" in err


def test_create_topics_creates_them_with_the_configured_partitions_before_the_routes(
    cli: Cli, kafka_admin: AdminClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = [f"t.made.{uuid.uuid4().hex[:8]}" for _ in range(2)]
    routes = tmp_path / "routes.toml"
    routes.write_text(
        "".join(
            f'[[route]]\nsubject = "/made/{i}"\ntopic = "{t}"\n\n' for i, t in enumerate(topics)
        )
    )
    monkeypatch.setenv("MDPEER_TOPIC_PARTITIONS", "3")
    dry = cli.json("routes", "apply", str(routes), "--dry-run", "--create-topics")
    assert sorted(m["topic"] for m in dry["missing_topics"]) == sorted(topics)
    assert dry["created_topics"] == []  # a dry run creates nothing either
    assert all(absent(kafka_admin, t) for t in topics)
    result = cli.json("routes", "apply", str(routes), "--create-topics")
    assert sorted(result["created_topics"]) == sorted(topics)
    assert result["missing_topics"] == []
    md = kafka_admin.list_topics(timeout=10).topics
    assert [len(md[t].partitions) for t in topics] == [3, 3]
    # Nothing missing any more: applying again names nothing.
    again = cli.json("routes", "apply", str(routes))
    assert again["missing_topics"] == []
    kafka_admin.delete_topics(topics)


def test_validate_with_bootstrap_names_missing_topics_without_creating_them(
    kafka_bootstrap: str, kafka_admin: AdminClient, unique_topic: TopicFactory, tmp_path: Path
) -> None:
    present = unique_topic(1)
    missing = f"t.absent.{uuid.uuid4().hex[:8]}"
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f'[[route]]\nsubject = "/v/a"\ntopic = "{present}"\n\n'
        f'[[route]]\nsubject = "/v/b"\ntopic = "{missing}"\n'
    )
    result = runner.invoke(app, ["validate", str(routes), "--bootstrap", kafka_bootstrap])
    assert result.exit_code == 0, result.output
    assert f"topic {missing} does not exist (target of /v/b)" in result.stderr
    assert present not in result.stderr
    assert absent(kafka_admin, missing)
