"""Routes: which MigratoryData subject goes to which Kafka topic, with which key and options.

Routes are data. They are loaded from a TOML file or from the vendor connector's JSON, checked
completely (nothing partial: the first error refuses the whole file), then written to the
control topic by the admin CLI, one ``route:<subject>`` record per subject.

A :class:`RouteTemplate` derives topic and key from the segments of a subject. Templates are an
authoring aid, expanded when a file is loaded or a route is added: MigratoryData has no
wildcard subscriptions, so a peer can only fetch subjects it is told about, and the control
topic only ever holds concrete routes. Placeholders, 1-based over the whole subject:

* ``{N}`` is segment N: for ``/orders/eu/7``, ``{1}`` = ``orders``, ``{3}`` = ``7``;
* ``{N..}`` is segments N to the end joined by ``/``: ``{2..}`` = ``eu/7``.

A key that expands to the empty string means no key. MigratoryData's Kafka-edition convention
(``/T/k...`` → topic ``T``, key ``k...``, a one-segment subject has no key) is the template
``prefix="/", topic="{1}", key="{2..}"`` (:meth:`RouteTemplate.kafka_convention`).
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from peer.errors import ConfigError
from peer.model import StartPolicy
from peer.secret import Secret

MAX_TOPIC_LENGTH: Final = 249
_TOPIC_RE: Final = re.compile(r"[a-zA-Z0-9._-]+")
_PLACEHOLDER_RE: Final = re.compile(r"\{(\d+)(\.\.)?\}")
HIDDEN: Final = "***"


class Oversize(enum.Enum):
    """What to do with a message larger than the producer accepts."""

    FAIL = "fail"  # stop the peer with the cause: nothing is lost silently
    SKIP = "skip"  # count it and go on
    DEAD_LETTER = "dead-letter"  # write it to the route's dead-letter topic with context headers


# --- validation of single values -------------------------------------------------------------


def _bad_char(text: str) -> str | None:
    if text.isascii() and text.isprintable() and " " not in text:
        return None  # the common case, decided in C (control tables rebuild 100k subjects)
    for ch in text:
        if ch.isspace():
            return f"contains whitespace ({ch!r})"
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs"):
            return f"contains a control or invalid character ({ch!r})"
    return None


def validate_subject(subject: object, field: str = "subject") -> str:
    """A MigratoryData subject: ``/seg[/seg...]``, segments non-empty, no ``*``, no spaces."""
    if not isinstance(subject, str):
        raise ConfigError(field, subject, "a subject must be a string like /server/status1")
    if not subject.startswith("/"):
        raise ConfigError(field, subject, "a subject starts with '/', like /server/status1")
    if len(subject) == 1 or "//" in subject or subject.endswith("/"):
        raise ConfigError(
            field, subject, "empty segment: subjects look like /a/b, not /a//b or /a/"
        )
    if "*" in subject:
        raise ConfigError(field, subject, "'*' is not allowed: MigratoryData has no wildcards")
    problem = _bad_char(subject)
    if problem:
        raise ConfigError(field, subject, problem)
    return subject


def validate_topic(topic: object, field: str = "topic") -> str:
    """A Kafka topic name: 1..249 of ``[a-zA-Z0-9._-]``, not ``.``/``..``, not ``__`` internal."""
    if not isinstance(topic, str):
        raise ConfigError(field, topic, "a topic name must be a string")
    if not topic or len(topic) > MAX_TOPIC_LENGTH:
        raise ConfigError(field, topic, f"a topic name has 1 to {MAX_TOPIC_LENGTH} characters")
    if not _TOPIC_RE.fullmatch(topic):
        raise ConfigError(
            field, topic, "a topic name uses only ASCII letters, digits, '.', '_', '-'"
        )
    if topic in (".", ".."):
        raise ConfigError(field, topic, "'.' and '..' are not valid topic names")
    if topic.startswith("__"):
        raise ConfigError(field, topic, "names starting with '__' are Kafka's internal topics")
    return topic


def validate_key(key: object, field: str = "key") -> str:
    """A record key: a non-empty string that encodes to UTF-8."""
    if not isinstance(key, str):
        raise ConfigError(field, key, "a key must be a string")
    if not key:
        raise ConfigError(field, key, "a key must not be empty (leave it out for no key)")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(field, key, "a key must be valid UTF-8 text") from None
    return key


def parse_oversize(value: object, field: str = "on_oversize") -> Oversize:
    try:
        return Oversize(value)
    except ValueError:
        raise ConfigError(field, value, "expected 'fail', 'skip' or 'dead-letter'") from None


def parse_start(value: object, field: str = "start") -> StartPolicy:
    if isinstance(value, StartPolicy):
        return value
    if not isinstance(value, str):
        raise ConfigError(field, value, "expected 'snapshot', 'latest' or 'history:N'")
    try:
        return StartPolicy.parse(value)
    except ConfigError as exc:
        raise ConfigError(field, value, exc.reason) from None


def _check_options(on_oversize: Oversize, dead_letter_topic: str | None, topic: str | None) -> None:
    if on_oversize is Oversize.DEAD_LETTER:
        if dead_letter_topic is None:
            raise ConfigError(
                "dead_letter_topic", None, "on_oversize='dead-letter' needs a dead_letter_topic"
            )
        validate_topic(dead_letter_topic, "dead_letter_topic")
        if dead_letter_topic == topic:
            raise ConfigError(
                "dead_letter_topic", dead_letter_topic, "must differ from the route's topic"
            )
    elif dead_letter_topic is not None:
        raise ConfigError(
            "dead_letter_topic",
            dead_letter_topic,
            f"only used with on_oversize='dead-letter' (it is {on_oversize.value!r})",
        )


def relabel(exc: ConfigError, prefix: str, *, hint: str | None = None) -> ConfigError:
    """The same error with its field placed under ``prefix`` (e.g. ``route[3].topic``)."""
    return ConfigError(f"{prefix}.{exc.field}", exc.value, exc.reason, hint=hint or exc.hint)


# --- the model --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """One subject → topic mapping, validated on construction."""

    subject: str
    topic: str
    key: str | None = None
    on_oversize: Oversize = Oversize.FAIL
    dead_letter_topic: str | None = None
    #: where a subject with no checkpoint begins
    start: StartPolicy = field(default_factory=StartPolicy)

    def __post_init__(self) -> None:
        validate_subject(self.subject)
        validate_topic(self.topic)
        if self.key is not None:
            validate_key(self.key)
        if not isinstance(self.on_oversize, Oversize):
            raise ConfigError("on_oversize", self.on_oversize, "expected an Oversize value")
        if not isinstance(self.start, StartPolicy):
            raise ConfigError("start", self.start, "expected a StartPolicy")
        _check_options(self.on_oversize, self.dead_letter_topic, self.topic)

    def for_subject(self, subject: str) -> Route:
        """This route's options for ``subject``, which the caller has validated already.

        Not re-validated: a control-table rebuild builds 100k routes from a few distinct
        option sets (``peer.control.decode``), and validation was most of its cost.
        """
        clone = object.__new__(Route)
        for name in _OPTION_SLOTS:
            object.__setattr__(clone, name, getattr(self, name))
        object.__setattr__(clone, "subject", subject)
        return clone

    def options(self) -> dict[str, str | None]:
        """Everything but subject, as plain strings (the control record's payload)."""
        return {
            "topic": self.topic,
            "key": self.key,
            "on_oversize": self.on_oversize.value,
            "dead_letter_topic": self.dead_letter_topic,
            "start": str(self.start),
        }

    def to_dict(self) -> dict[str, str | None]:
        return {"subject": self.subject, **self.options()}

    @classmethod
    def from_dict(cls, data: Mapping[str, object], subject: str | None = None) -> Route:
        """Build from plain values (TOML table, JSON); unknown fields are an error."""
        unknown = set(data) - ROUTE_FIELDS
        if unknown:
            name = sorted(unknown)[0]
            raise ConfigError(
                name, data[name], f"unknown route field; known: {_known(ROUTE_FIELDS)}"
            )
        subj = subject if subject is not None else data.get("subject")
        if "topic" not in data:
            raise ConfigError("topic", None, "a route needs a topic")
        key = data.get("key")
        dlt = data.get("dead_letter_topic")
        return cls(
            subject=validate_subject(subj),
            topic=validate_topic(data["topic"]),
            key=None if key is None else validate_key(key),
            on_oversize=parse_oversize(data.get("on_oversize", "fail")),
            dead_letter_topic=None if dlt is None else validate_topic(dlt, "dead_letter_topic"),
            start=parse_start(data.get("start", "snapshot")),
        )


_OPTION_SLOTS: Final = ("topic", "key", "on_oversize", "dead_letter_topic", "start")
ROUTE_FIELDS: Final = frozenset(
    {"subject", "topic", "key", "on_oversize", "dead_letter_topic", "start"}
)
_TEMPLATE_FIELDS: Final = frozenset(
    {"prefix", "topic", "key", "on_oversize", "dead_letter_topic", "start"}
)


def _known(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def _placeholders(template: str, field: str) -> list[tuple[int, bool]]:
    """Parse ``{N}``/``{N..}``; any other brace is an error."""
    found = []
    rest = _PLACEHOLDER_RE.sub("", template)
    if "{" in rest or "}" in rest:
        raise ConfigError(field, template, "placeholders are {N} or {N..} (N from 1)")
    for m in _PLACEHOLDER_RE.finditer(template):
        n = int(m.group(1))
        if n < 1:
            raise ConfigError(field, template, "segments are numbered from 1: {1} is the first")
        found.append((n, m.group(2) is not None))
    return found


def _expand(template: str, segments: list[str]) -> str:
    def one(m: re.Match[str]) -> str:
        n = int(m.group(1))
        return "/".join(segments[n - 1 :]) if m.group(2) else segments[n - 1]

    return _PLACEHOLDER_RE.sub(one, template)


@dataclass(frozen=True, slots=True)
class RouteTemplate:
    """Derives topic and key from the segments of subjects under ``prefix`` (see module doc)."""

    prefix: str
    topic: str
    key: str | None = None
    on_oversize: Oversize = Oversize.FAIL
    dead_letter_topic: str | None = None
    start: StartPolicy = field(default_factory=StartPolicy)
    #: fewest segments a subject needs for every placeholder to expand
    min_segments: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not (
            self.prefix.startswith("/") and self.prefix.endswith("/")
        ):
            raise ConfigError("prefix", self.prefix, "a prefix starts and ends with '/': /server/")
        if self.prefix != "/":
            validate_subject(self.prefix[:-1], "prefix")
        if not isinstance(self.topic, str) or not self.topic:
            raise ConfigError("topic", self.topic, "a template needs a topic, e.g. '{1}'")
        need = len(self.prefix[1:].split("/"))  # prefix segments + at least one more
        for n, _rest in _placeholders(self.topic, "topic"):
            need = max(need, n)
        literal = _PLACEHOLDER_RE.sub("", self.topic)
        if literal and not _TOPIC_RE.fullmatch(literal):
            raise ConfigError("topic", self.topic, "literal text must be valid in topic names")
        if self.key is not None:
            if not isinstance(self.key, str) or not self.key:
                raise ConfigError("key", self.key, "a key template must be a non-empty string")
            for n, rest in _placeholders(self.key, "key"):
                need = max(need, n - 1 if rest else n)
        _check_options(self.on_oversize, self.dead_letter_topic, None)
        object.__setattr__(self, "min_segments", need)

    @classmethod
    def kafka_convention(cls) -> RouteTemplate:
        """MigratoryData's Kafka edition: ``/T/k...`` → topic T, key ``k...`` (none if absent)."""
        return cls(prefix="/", topic="{1}", key="{2..}")

    def matches(self, subject: str) -> bool:
        return (
            subject.startswith(self.prefix)
            and len(subject) > len(self.prefix)
            and len(subject[1:].split("/")) >= self.min_segments
        )

    def derive(self, subject: str) -> Route | None:
        """The route for ``subject``, or None if it does not match; ConfigError if invalid."""
        validate_subject(subject)
        if not self.matches(subject):
            return None
        segments = subject[1:].split("/")
        where = f"template[{self.prefix}]"
        topic = _expand(self.topic, segments)
        try:
            validate_topic(topic)
        except ConfigError as exc:
            raise ConfigError(
                f"{where}.topic", topic, f"derived from subject {subject!r}: {exc.reason}"
            ) from None
        key = _expand(self.key, segments) if self.key is not None else None
        return Route(
            subject=subject,
            topic=topic,
            key=key or None,
            on_oversize=self.on_oversize,
            dead_letter_topic=self.dead_letter_topic,
            start=self.start,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> RouteTemplate:
        unknown = set(data) - _TEMPLATE_FIELDS
        if unknown:
            name = sorted(unknown)[0]
            raise ConfigError(
                name, data[name], f"unknown template field; known: {_known(_TEMPLATE_FIELDS)}"
            )
        for name in ("prefix", "topic"):
            if name not in data:
                raise ConfigError(name, None, f"a template needs a {name}")
        return cls(
            prefix=_str_field(data, "prefix"),
            topic=_str_field(data, "topic"),
            key=_opt_str_field(data, "key"),
            on_oversize=parse_oversize(data.get("on_oversize", "fail")),
            dead_letter_topic=_opt_str_field(data, "dead_letter_topic"),
            start=parse_start(data.get("start", "snapshot")),
        )


def _str_field(data: Mapping[str, object], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise ConfigError(name, value, "expected a string")
    return value


def _opt_str_field(data: Mapping[str, object], name: str) -> str | None:
    return _str_field(data, name) if data.get(name) is not None else None


@dataclass(frozen=True, slots=True)
class RouteDiff:
    """What turns one table into another (``current.diff(desired)``)."""

    added: tuple[Route, ...] = ()
    removed: tuple[Route, ...] = ()
    #: (before, after) pairs with the same subject
    changed: tuple[tuple[Route, Route], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


class RouteTable(Mapping[str, Route]):
    """An immutable mapping subject → Route, plus the templates that derive new routes."""

    __slots__ = ("_routes", "_templates")

    def __init__(
        self, routes: Iterable[Route] = (), templates: Iterable[RouteTemplate] = ()
    ) -> None:
        table: dict[str, Route] = {}
        for route in routes:
            if route.subject in table:
                raise ConfigError("subject", route.subject, "has more than one route")
            table[route.subject] = route
        self._routes = dict(sorted(table.items()))
        prefixes: set[str] = set()
        for t in templates:
            if t.prefix in prefixes:
                raise ConfigError("prefix", t.prefix, "more than one template has this prefix")
            prefixes.add(t.prefix)
        # Longest prefix first: the most specific template wins.
        self._templates = tuple(sorted(templates, key=lambda t: -len(t.prefix)))

    def __getitem__(self, subject: str) -> Route:
        return self._routes[subject]

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RouteTable):
            return NotImplemented
        return self._routes == other._routes and set(self._templates) == set(other._templates)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RouteTable({len(self._routes)} routes, {len(self._templates)} templates)"

    @property
    def templates(self) -> tuple[RouteTemplate, ...]:
        return self._templates

    def routes(self) -> tuple[Route, ...]:
        return tuple(self._routes.values())

    def lookup(self, subject: str) -> Route | None:
        """The explicit route of ``subject``, else the one the best template derives, else None."""
        route = self._routes.get(subject)
        if route is not None:
            return route
        for template in self._templates:
            derived = template.derive(subject)
            if derived is not None:
                return derived
        return None

    def diff(self, other: RouteTable) -> RouteDiff:
        """Routes to add, remove and change to go from this table to ``other``."""
        added = tuple(r for s, r in other._routes.items() if s not in self._routes)
        removed = tuple(r for s, r in self._routes.items() if s not in other._routes)
        changed = tuple(
            (r, other._routes[s])
            for s, r in self._routes.items()
            if s in other._routes and other._routes[s] != r
        )
        return RouteDiff(added, removed, changed)


# --- what a file holds ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectorSource:
    """MigratoryData settings found in a vendor connector JSON (None: not given)."""

    servers: tuple[str, ...] | None = None
    encryption: bool | None = None
    token: Secret | None = None


@dataclass(frozen=True, slots=True)
class RoutesFile:
    """What a routes file holds. ``notes`` are things the CLI should print (ignored keys...)."""

    path: Path
    table: RouteTable
    source: ConnectorSource | None = None
    #: the vendor's ``tasks.max``: ``mdpeer init`` takes it as the shard count when it is
    #: above the default
    shards: int | None = None
    notes: tuple[str, ...] = ()
    #: Kafka Connect's ``topic.creation.default.partitions`` / ``.replication.factor``
    #: (-1: the broker's default; None: not in the file)
    topic_partitions: int | None = None
    topic_replication_factor: int | None = None
