"""peer.routes.model: the route model, templates, and the TOML / vendor-connector parsers."""

from __future__ import annotations

import textwrap
import tomllib
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.config.connector import parse_servers
from peer.config.routesfile import load_routes
from peer.errors import ConfigError
from peer.model import StartKind, StartPolicy
from peer.routes.model import (
    Oversize,
    Route,
    RouteTable,
    RouteTemplate,
    validate_key,
    validate_subject,
    validate_topic,
)
from tests.fixtures.config_files import ConnectorFile, assert_refused, write

DATA = Path(__file__).parent / "data"


# --- single values ----------------------------------------------------------------------------


@pytest.mark.parametrize("subject", ["/a", "/server/status1", "/a/b/c/d", "/x.y/z-1", "/météo/zü"])
def test_valid_subjects(subject: str) -> None:
    assert validate_subject(subject) == subject


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        ("server/status1", "starts with '/'"),
        ("", "starts with '/'"),
        ("/", "empty segment"),
        ("/a//b", "empty segment"),
        ("/a/", "empty segment"),
        ("/a/*", "'*' is not allowed"),
        ("/a/b c", "whitespace"),
        ("/a/b\tc", "whitespace"),
        ("/a/\x00", "control"),
        ("/a/\u200b", "control"),
        (42, "must be a string"),
    ],
)
def test_invalid_subjects_name_field_and_value(subject: object, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_subject(subject, "routes[3].subject")
    assert err.value.field == "routes[3].subject"
    assert err.value.value == subject
    assert reason in err.value.reason
    assert str(err.value).startswith(f"routes[3].subject={subject!r}: ")


@pytest.mark.parametrize("topic", ["t", "topic1", "a.b_c-D9", "x" * 249, "..."])
def test_valid_topics(topic: str) -> None:
    assert validate_topic(topic) == topic


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", "1 to 249"),
        ("x" * 250, "1 to 249"),
        (".", "'.' and '..'"),
        ("..", "'.' and '..'"),
        ("my topic", "only ASCII letters"),
        ("tópico", "only ASCII letters"),
        ("a/b", "only ASCII letters"),
        ("__consumer_offsets", "internal"),
        (None, "must be a string"),
    ],
)
def test_invalid_topics(topic: object, reason: str) -> None:
    with pytest.raises(ConfigError, match="topic") as err:
        validate_topic(topic)
    assert err.value.value == topic
    assert reason in err.value.reason


def test_keys() -> None:
    assert validate_key("mykey") == "mykey"
    assert validate_key("ключ/1 2") == "ключ/1 2"  # keys are free UTF-8 text
    for bad, reason in [("", "not be empty"), (7, "a string"), ("\ud800", "UTF-8")]:
        with pytest.raises(ConfigError) as err:
            validate_key(bad, "migratorydata.key.a.b")
        assert err.value.field == "migratorydata.key.a.b"
        assert reason in err.value.reason


# --- Route ------------------------------------------------------------------------------------


def test_route_defaults_and_dict_round_trip() -> None:
    r = Route("/server/status2", "topic2", "mykey")
    assert r.on_oversize is Oversize.FAIL
    assert r.start == StartPolicy()
    assert r.dead_letter_topic is None
    assert Route.from_dict(r.to_dict()) == r
    assert r.options() == {
        "topic": "topic2",
        "key": "mykey",
        "on_oversize": "fail",
        "dead_letter_topic": None,
        "start": "snapshot",
    }


def test_route_options_parse_from_strings() -> None:
    # as a routes file's [[route]] table gives them
    table = """
        subject = "/a/b"
        topic = "t"
        on_oversize = "dead-letter"
        dead_letter_topic = "t.dlq"
        start = "history:100"
    """
    r = Route.from_dict(tomllib.loads(textwrap.dedent(table)))
    assert r.on_oversize is Oversize.DEAD_LETTER
    assert r.dead_letter_topic == "t.dlq"
    assert r.start == StartPolicy(StartKind.HISTORY, 100)


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"on_oversize": "drop"}, "on_oversize", "'fail', 'skip' or 'dead-letter'"),
        ({"on_oversize": "dead-letter"}, "dead_letter_topic", "needs a dead_letter_topic"),
        ({"dead_letter_topic": "x"}, "dead_letter_topic", "only used with"),
        (
            {"on_oversize": "dead-letter", "dead_letter_topic": "t"},
            "dead_letter_topic",
            "must differ",
        ),
        (
            {"on_oversize": "dead-letter", "dead_letter_topic": "bad name"},
            "dead_letter_topic",
            "ASCII",
        ),
        ({"start": "history:0"}, "start", "positive count"),
        ({"start": "yesterday"}, "start", "'snapshot', 'latest' or 'history:N'"),
        ({"start": 5}, "start", "'snapshot'"),
        ({"tpoic": "t2"}, "tpoic", "unknown route field"),
        ({"key": ""}, "key", "not be empty"),
    ],
)
def test_route_option_errors(fields: dict[str, object], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        Route.from_dict({"subject": "/a/b", "topic": "t", **fields})
    assert err.value.field == field
    assert reason in err.value.reason


def test_route_needs_a_topic() -> None:
    with pytest.raises(ConfigError, match="a route needs a topic"):
        Route.from_dict({"subject": "/a"})


def test_route_is_frozen() -> None:
    r = Route("/a", "t")
    with pytest.raises(AttributeError):
        r.topic = "other"  # type: ignore[misc]


# --- templates --------------------------------------------------------------------------------


def test_kafka_convention_template() -> None:
    t = RouteTemplate.kafka_convention()
    assert t.derive("/orders/eu/7") == Route("/orders/eu/7", "orders", "eu/7")
    assert t.derive("/orders/eu") == Route("/orders/eu", "orders", "eu")
    # One segment: a null key, as in MigratoryData's Kafka edition.
    assert t.derive("/orders") == Route("/orders", "orders", None)


def test_prefix_template_with_literal_text_and_options() -> None:
    t = RouteTemplate(prefix="/server/", topic="md.{1}.{2}", key="k-{2}", on_oversize=Oversize.SKIP)
    assert t.derive("/server/status1") == Route(
        "/server/status1", "md.server.status1", "k-status1", on_oversize=Oversize.SKIP
    )
    assert t.derive("/other/status1") is None
    assert t.derive("/server") is None  # the prefix itself is not under the prefix


def test_template_needs_enough_segments() -> None:
    t = RouteTemplate(prefix="/a/", topic="{3}")
    assert t.min_segments == 3
    assert t.derive("/a/b") is None
    assert t.derive("/a/b/c") == Route("/a/b/c", "c")


def test_template_derived_topic_must_be_valid() -> None:
    t = RouteTemplate(prefix="/", topic="{1}")
    with pytest.raises(ConfigError) as err:
        t.derive("/tópico/x")
    assert err.value.field == "template[/].topic"
    assert err.value.value == "tópico"
    assert "derived from subject '/tópico/x'" in err.value.reason


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"prefix": "server/"}, "prefix", "starts and ends with '/'"),
        ({"prefix": "/server"}, "prefix", "starts and ends with '/'"),
        ({"prefix": "/a//"}, "prefix", "empty segment"),
        ({"topic": "{0}"}, "topic", "numbered from 1"),
        ({"topic": "{x}"}, "topic", "{N} or {N..}"),
        ({"topic": "t {1}"}, "topic", "literal text"),
        ({"topic": ""}, "topic", "needs a topic"),
        ({"key": "{1"}, "key", "{N} or {N..}"),
        ({"key": ""}, "key", "non-empty"),
        ({"dead_letter_topic": "dlq"}, "dead_letter_topic", "only used with"),
        ({"prefx": "/"}, "prefx", "unknown template field"),
    ],
)
def test_template_errors(fields: dict[str, object], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        RouteTemplate.from_dict({"prefix": "/", "topic": "{1}", **fields})
    assert err.value.field == field
    assert reason in err.value.reason


# --- the table --------------------------------------------------------------------------------


def test_table_is_an_immutable_sorted_mapping() -> None:
    table = RouteTable([Route("/b", "t2"), Route("/a", "t1")])
    assert list(table) == ["/a", "/b"]
    assert table["/a"].topic == "t1"
    assert len(table) == 2
    assert "/c" not in table
    assert not hasattr(table, "__setitem__")
    assert repr(table) == "RouteTable(2 routes, 0 templates)"


def test_table_refuses_duplicates_and_conflicting_templates() -> None:
    with pytest.raises(ConfigError, match="'/a': has more than one route"):
        RouteTable([Route("/a", "t1"), Route("/a", "t2")])
    with pytest.raises(ConfigError, match="more than one template has this prefix"):
        RouteTable((), [RouteTemplate("/x/", "{1}"), RouteTemplate("/x/", "{2}")])


def test_lookup_prefers_explicit_routes_then_the_longest_prefix() -> None:
    table = RouteTable(
        [Route("/orders/special", "special")],
        [RouteTemplate.kafka_convention(), RouteTemplate("/orders/eu/", "eu-orders", "{3..}")],
    )
    assert table.lookup("/orders/special") == Route("/orders/special", "special")
    assert table.lookup("/orders/eu/7/x") == Route("/orders/eu/7/x", "eu-orders", "7/x")
    assert table.lookup("/orders/us/1") == Route("/orders/us/1", "orders", "us/1")
    assert RouteTable().lookup("/orders/us/1") is None


def test_diff() -> None:
    before = RouteTable([Route("/a", "t"), Route("/b", "t"), Route("/c", "t")])
    after = RouteTable([Route("/a", "t"), Route("/b", "t", "k"), Route("/d", "t")])
    d = before.diff(after)
    assert d.added == (Route("/d", "t"),)
    assert d.removed == (Route("/c", "t"),)
    assert d.changed == ((Route("/b", "t"), Route("/b", "t", "k")),)
    assert d
    assert not after.diff(after)
    assert before.diff(RouteTable()).removed == before.routes()


# --- TOML -------------------------------------------------------------------------------------


def test_routes_toml_fixture() -> None:
    loaded = load_routes(DATA / "routes.toml")
    t = loaded.table
    assert t["/server/status1"] == Route("/server/status1", "topic1")
    assert t["/server/status2"] == Route("/server/status2", "topic2", "mykey")
    assert t["/alerts/critical"] == Route(
        "/alerts/critical",
        "alerts",
        on_oversize=Oversize.DEAD_LETTER,
        dead_letter_topic="alerts.oversize",
        start=StartPolicy(StartKind.HISTORY, 100),
    )
    # Derived by the template, which also gives its on_oversize; the route's own start wins.
    assert t["/orders/eu/7"] == Route("/orders/eu/7", "orders", "eu/7", Oversize.SKIP)
    assert t["/orders/us/1"] == Route(
        "/orders/us/1", "orders", "us/1", Oversize.SKIP, start=StartPolicy(StartKind.LATEST)
    )
    assert len(t) == 5
    assert len(t.templates) == 1
    assert loaded.source is None
    assert loaded.shards is None
    assert loaded.notes == ()


ROUTE = '[[route]]\nsubject = "/a/b"\ntopic = "t"\n'


@pytest.mark.parametrize(
    ("text", "field", "value", "reason"),
    [
        (
            ROUTE + '[[route]]\nsubject = "/c"\ntopic = "bad topic"\n',
            "route[2].topic",
            "bad topic",
            "ASCII",
        ),
        (
            ROUTE + '[[route]]\nsubject = "c"\ntopic = "t"\n',
            "route[2].subject",
            "c",
            "starts with '/'",
        ),
        ('[[route]]\nsubject = "/a"\ntpoic = "t"\n', "route[1].tpoic", "t", "unknown route field"),
        (ROUTE + ROUTE, "route[2].subject", "/a/b", "already routed by route[1]"),
        ('[[route]]\nsubject = "/a"\n', "route[1].topic", None, "no [[template]] matches '/a'"),
        ('[[routes]]\nsubject = "/a"\n', "routes", [{"subject": "/a"}], "unknown table"),
        ('route = "x"\n', "route", "x", "[[route]] tables"),
        (
            '[[template]]\nprefix = "/a"\ntopic = "{1}"\n',
            "template[1].prefix",
            "/a",
            "ends with '/'",
        ),
        (
            (
                '[[template]]\nprefix = "/a/"\ntopic = "{1}"\n'
                '[[template]]\nprefix = "/a/"\ntopic = "x"\n'
            ),
            "template.prefix",
            "/a/",
            "more than one template",
        ),
        (
            '[[template]]\nprefix = "/"\ntopic = "{1}"\n[[route]]\nsubject = "/a b/c"\n',
            "route[1].subject",
            "/a b/c",
            "whitespace",
        ),
    ],
)
def test_routes_toml_errors_name_the_entry(
    tmp_path: Path, text: str, field: str, value: object, reason: str
) -> None:
    path = write(tmp_path, "routes.toml", text)
    with pytest.raises(ConfigError) as err:
        load_routes(path)
    assert err.value.field == field
    assert err.value.value == value
    assert reason in err.value.reason
    assert err.value.hint == f"in {path}"


def test_routes_file_type_and_syntax_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"expected a \.toml routes file or a connector \.json"):
        load_routes(write(tmp_path, "routes.yaml", ""))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_routes(write(tmp_path, "bad.toml", "[[route]\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_routes(tmp_path / "missing.toml")


def test_empty_routes_file_is_an_empty_table(tmp_path: Path) -> None:
    assert len(load_routes(write(tmp_path, "routes.toml", "")).table) == 0


# --- the vendor connector JSON ----------------------------------------------------------------


def test_vendor_quick_start_connector() -> None:
    loaded = load_routes(DATA / "connector.json")
    assert loaded.table.routes() == (
        Route("/server/status1", "topic1"),
        Route("/server/status2", "topic2", "mykey"),
    )
    assert loaded.shards == 2
    assert loaded.source is not None
    assert loaded.source.servers == ("localhost:8800",)
    assert loaded.source.encryption is False
    assert loaded.source.token is not None
    assert loaded.source.token.reveal() == "some-token"
    assert "some-token" not in repr(loaded)
    notes = "\n".join(loaded.notes)
    for key in ("name", "connector.class", "key.converter", "value.converter"):
        assert f"{key}: " in notes
    assert all(n.endswith("ignored") for n in loaded.notes)


def test_connect_rest_body_form() -> None:
    loaded = load_routes(DATA / "connector-rest.json")
    assert loaded.table.routes() == (
        Route("/mysubject/1", "mytopic1"),
        Route("/mysubject/2", "mytopic2", "mykey2"),
    )
    assert loaded.shards == 5
    assert loaded.source is not None
    assert loaded.source.servers == ("push1.example.com:443", "push2.example.com:443")
    assert loaded.source.encryption is True


def test_connector_unknown_connect_keys_are_noted_not_fatal(connector_file: ConnectorFile) -> None:
    # Unknown migratorydata.* keys are errors: tests/test_connector.py
    loaded = load_routes(
        connector_file({"migratorydata.subject.a.b": "t", "errors.tolerance": "all"})
    )
    assert loaded.table.routes() == (Route("/a/b", "t"),)
    assert loaded.source is None
    assert loaded.shards is None
    assert loaded.notes == (
        "errors.tolerance: a Kafka Connect setting mdpeer does not use; ignored",
    )


@pytest.mark.parametrize(
    ("config", "field", "reason"),
    [
        ({"migratorydata.key.a.b": "k"}, "migratorydata.key.a.b", "no migratorydata.subject.a.b"),
        ({"migratorydata.subject.a..b": "t"}, "migratorydata.subject.a..b", "empty segment"),
        ({"migratorydata.subject.": "t"}, "migratorydata.subject.", "empty segment"),
        ({"migratorydata.subject.a.*": "t"}, "migratorydata.subject.a.*", "'*'"),
        (
            {"migratorydata.subject.mysubject.1": "my topic"},
            "migratorydata.subject.mysubject.1",
            "ASCII",
        ),
        ({"migratorydata.subject.a": 5}, "migratorydata.subject.a", "must be a string"),
        (
            {"migratorydata.subject.a": "t", "migratorydata.key.a": ""},
            "migratorydata.key.a",
            "not be empty",
        ),
        ({"migratorydata.servers": "localhost"}, "migratorydata.servers", "host:port"),
        ({"migratorydata.servers": ""}, "migratorydata.servers", "at least one"),
        ({"migratorydata.encryption": "maybe"}, "migratorydata.encryption", "true or false"),
        ({"tasks.max": "0"}, "tasks.max", "positive integer"),
        ({"tasks.max": "two"}, "tasks.max", "positive integer"),
    ],
)
def test_connector_errors_name_the_connector_key(
    connector_file: ConnectorFile, config: dict[str, object], field: str, reason: str
) -> None:
    assert_refused(connector_file({"migratorydata.subject.ok.one": "t", **config}), field, reason)


def test_connector_token_never_in_errors(connector_file: ConnectorFile) -> None:
    with pytest.raises(ConfigError) as err:
        load_routes(connector_file({"migratorydata.entitlement_token": ["s3cr3t"]}))
    assert "s3cr3t" not in str(err.value)
    assert err.value.field == "migratorydata.entitlement_token"


def test_connector_duplicate_json_keys_are_refused(tmp_path: Path) -> None:
    text = '{"migratorydata.subject.a": "t1", "migratorydata.subject.a": "t2"}'
    with pytest.raises(ConfigError) as err:
        load_routes(write(tmp_path, "c.json", text))
    assert err.value.field == "migratorydata.subject.a"
    assert "more than once" in err.value.reason


def test_connector_must_be_a_json_object(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a JSON object"):
        load_routes(write(tmp_path, "c.json", "[1, 2]"))
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_routes(write(tmp_path, "c.json", "{"))


def test_connector_numbers_are_accepted_for_tasks_max(connector_file: ConnectorFile) -> None:
    loaded = load_routes(connector_file({"tasks.max": 3, "migratorydata.encryption": True}))
    assert loaded.shards == 3
    assert loaded.source is not None
    assert loaded.source.encryption is True


# --- servers ----------------------------------------------------------------------------------


def test_servers() -> None:
    # Checked by the REST source's parser, so a list that loads is one the source accepts.
    assert parse_servers("a:1, 100 b:2 ,[::1]:8800") == ("a:1", "b:2", "[::1]:8800")
    assert parse_servers(["0 x.example.com:0443", "50 y:1"]) == ("0 x.example.com:443", "50 y:1")
    for bad, reason in [
        ("a", "host:port"),
        ("a:0", "port"),
        ("a:70000", "port"),
        ("101 a:1", "weight"),
        ("x a:1", "weight"),
        ("1 2 a:1", "host:port"),
        ("[::1:80", "IPv6"),
        ("bad_host!:80", "host:port"),
        ("a:1,a:1", "listed twice"),
        ("", "at least one"),
        (7, "expected"),
        (["a:1", 2], "expected"),
    ]:
        with pytest.raises(ConfigError) as err:
            parse_servers(bad, "source.servers")
        assert err.value.field == "source.servers"
        assert reason in err.value.reason


# --- properties -------------------------------------------------------------------------------

SEGMENT = st.text(
    st.characters(exclude_categories=("Cc", "Cf", "Cs", "Zs", "Zl", "Zp"), exclude_characters="/*"),
    min_size=1,
    max_size=12,
).filter(lambda s: not any(c.isspace() for c in s))
SUBJECT = st.lists(SEGMENT, min_size=1, max_size=6).map(lambda segs: "/" + "/".join(segs))


@given(SUBJECT)
def test_generated_subjects_are_valid(subject: str) -> None:
    assert validate_subject(subject) == subject


@given(SUBJECT, st.sampled_from(["*", " ", "\n", "\x7f", "//"]), st.data())
def test_a_bad_character_anywhere_is_refused(subject: str, bad: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(min_value=1, max_value=len(subject)))
    with pytest.raises(ConfigError) as err:
        validate_subject(subject[:at] + bad + subject[at:])
    assert err.value.field == "subject"


@given(st.text(st.sampled_from("abcXYZ019._-"), min_size=1, max_size=249))
def test_generated_topics(topic: str) -> None:
    if topic in (".", "..") or topic.startswith("__"):
        with pytest.raises(ConfigError):
            validate_topic(topic)
    else:
        assert validate_topic(topic) == topic


@given(st.lists(SEGMENT.filter(lambda s: "." not in s), min_size=1, max_size=5), SEGMENT)
def test_connector_key_maps_back_to_the_subject(segments: list[str], key: str) -> None:
    # Any subject whose segments have no '.' survives the vendor's a.b encoding.
    subject = "/" + "/".join(segments)
    from peer.config.connector import parse_connector

    dotted = ".".join(segments)
    loaded = parse_connector(
        {f"migratorydata.subject.{dotted}": "t", f"migratorydata.key.{dotted}": key},
        Path("c.json"),
    )
    assert loaded.table.routes() == (Route(subject, "t", key),)


def test_a_route_overriding_the_templates_policy_drops_its_dead_letter_topic(
    tmp_path: Path,
) -> None:
    text = (
        '[[template]]\nprefix = "/"\ntopic = "{1}"\non_oversize = "dead-letter"\n'
        'dead_letter_topic = "dlq"\n'
        '[[route]]\nsubject = "/a/b"\non_oversize = "skip"\n'
        '[[route]]\nsubject = "/c/d"\n'
    )
    table = load_routes(write(tmp_path, "routes.toml", text)).table
    assert table["/a/b"] == Route("/a/b", "a", on_oversize=Oversize.SKIP)
    assert table["/c/d"] == Route(
        "/c/d", "c", on_oversize=Oversize.DEAD_LETTER, dead_letter_topic="dlq"
    )


def _reference_subject_problem(subject: str) -> bool:
    """The rule spelled out slowly: what validate_subject must refuse."""
    if not subject.startswith("/") or "*" in subject:
        return True
    if any(seg == "" for seg in subject[1:].split("/")):
        return True
    return any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in subject)


@given(
    st.text(
        alphabet=st.one_of(
            st.sampled_from("/ab*\t \x00\x1f\x7f\u200b\u00e9\u3000"), st.characters()
        ),
        max_size=12,
    ).map(lambda t: "/" + t)
)
def test_subject_validation_fast_path_agrees_with_the_rule(subject: str) -> None:
    refused = False
    try:
        validate_subject(subject)
    except ConfigError:
        refused = True
    assert refused == _reference_subject_problem(subject)


def test_for_subject_is_the_same_route_for_another_subject() -> None:
    def route_of(subject: str) -> Route:
        return Route(
            subject,
            "orders",
            key="k",
            on_oversize=Oversize.DEAD_LETTER,
            dead_letter_topic="dlq",
            start=StartPolicy.parse("history:5"),
        )

    route = route_of("/a/1")
    other = route.for_subject("/a/2")
    assert other == route_of("/a/2")
    assert hash(other) == hash(route_of("/a/2"))
    assert route.subject == "/a/1"  # the original is untouched
