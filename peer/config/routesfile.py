"""Loading a routes file: ``.toml`` (mdpeer's format) or the vendor connector's ``.json``.

All or nothing: the first error refuses the whole file, naming the field as written in it.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peer.config.connector import parse_connector
from peer.errors import ConfigError
from peer.routes.model import (
    ROUTE_FIELDS,
    Route,
    RoutesFile,
    RouteTable,
    RouteTemplate,
    relabel,
    validate_subject,
)


def load_routes(path: str | Path, *, lenient: bool = False) -> RoutesFile:
    """Load a ``.toml`` routes file or a vendor connector ``.json``; all or nothing.

    ``lenient``: unknown ``migratorydata.*`` keys of a connector JSON are notes, not errors.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(
            "routes_file", str(p), "expected a .toml routes file or a connector .json"
        )
    text = read_text(p, "routes_file")
    if suffix == ".toml":
        return parse_routes_toml(text, p)
    return parse_connector(parse_json(text, p), p, lenient=lenient)


def read_text(path: Path, field: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(field, str(path), f"cannot read: {reason}") from None


def parse_json(text: str, path: Path) -> object:
    """JSON with duplicate keys refused (plain json keeps the last one silently)."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise ConfigError(k, str(path), "this key appears more than once in the JSON")
            out[k] = v
        return out

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise ConfigError(str(path), f"line {exc.lineno}", f"not valid JSON: {exc.msg}") from None


def parse_routes_toml(text: str, path: Path) -> RoutesFile:
    hint = f"in {path}"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None
    for name, value in doc.items():
        if name not in ("route", "template"):
            raise ConfigError(
                name,
                value,
                "unknown table; a routes file has [[route]] and [[template]]",
                hint=hint,
            )
    templates: list[RouteTemplate] = []
    for i, data in enumerate(_tables(doc, "template", hint), start=1):
        try:
            templates.append(RouteTemplate.from_dict(data))
        except ConfigError as exc:
            raise relabel(exc, f"template[{i}]", hint=hint) from None
    try:
        finder = RouteTable((), templates)
    except ConfigError as exc:
        raise relabel(exc, "template", hint=hint) from None
    routes: list[Route] = []
    seen: dict[str, int] = {}
    for i, data in enumerate(_tables(doc, "route", hint), start=1):
        where = f"route[{i}]"
        try:
            route = _route_from_toml(data, finder)
        except ConfigError as exc:
            raise relabel(exc, where, hint=hint) from None
        if route.subject in seen:
            raise ConfigError(
                f"{where}.subject",
                route.subject,
                f"already routed by route[{seen[route.subject]}]",
                hint=hint,
            )
        seen[route.subject] = i
        routes.append(route)
    return RoutesFile(path=path, table=RouteTable(routes, templates))


def _tables(doc: Mapping[str, Any], name: str, hint: str) -> list[Mapping[str, object]]:
    value = doc.get(name, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(name, value, f"write it as [[{name}]] tables", hint=hint)
    return value


def _route_from_toml(data: Mapping[str, object], finder: RouteTable) -> Route:
    if "topic" in data or set(data) - ROUTE_FIELDS:
        return Route.from_dict(data)
    # No topic: a template of this file derives it; the route's own fields win.
    subject = validate_subject(data.get("subject"))
    derived = finder.lookup(subject)  # the finder holds templates only
    if derived is None:
        raise ConfigError("topic", None, f"missing, and no [[template]] matches {subject!r}")
    base = derived.to_dict()
    if "on_oversize" in data:  # the route picks its own policy: the template's target goes
        base.pop("dead_letter_topic")
    return Route.from_dict({**base, **data})
