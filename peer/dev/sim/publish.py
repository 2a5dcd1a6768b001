"""A publisher that goes through REST produce, like any MigratoryData REST client would.

Per subject, messages are sent one after the other (so their seqs follow the send order);
subjects run in parallel up to ``concurrency``; ``rate`` paces all subjects together. Over one
keep-alive connection pool.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from peer.dev.sim.model import check_subject

STATUSES: Final = ("OK", "FAILED", "DENY", "MESSAGE_SIZE_LIMIT_EXCEEDED")


def normalize_server(server: str) -> str:
    """``host:port`` or ``http(s)://host[:port][/]`` -> ``http(s)://host[:port]``.

    The forms one entry of ``mdpeer run --servers`` takes (peer.source.servers; peer.dev.sim
    imports nothing from the peer, so the rules are restated here): a bare ``host:port`` needs
    its port and means http; a URL may leave the port to its scheme; no path, query, user
    info or fragment.
    """
    text = server.strip()
    forms = "expected HOST:PORT or http(s)://HOST[:PORT]"
    parts = urlsplit(text if "://" in text else "http://" + text)
    if "@" in parts.netloc:  # the value may hold a password: not repeated
        raise ValueError(f"server: user info ('user@') is not allowed; {forms}")
    problem = ""
    if parts.scheme not in ("http", "https"):
        problem = f"the scheme {parts.scheme!r} is not http or https"
    elif parts.netloc.count(":") > 1 and not parts.netloc.startswith("["):
        problem = "put an IPv6 address in brackets: [::1]:8800"
    elif not parts.hostname:
        problem = "no host"
    elif parts.path not in ("", "/"):
        problem = f"a path ({parts.path!r}) is not allowed"
    elif parts.query or parts.fragment:
        problem = "a query or fragment is not allowed"
    else:
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            problem = "the port must be a number 1-65535"
        elif port is None and "://" not in text:
            problem = "no port"
    if problem:
        shown = text.split("?", 1)[0] + ("?***" if "?" in text else "")  # a query may hold a token
        raise ValueError(f"server={shown!r}: {problem}; {forms}")
    return f"{parts.scheme}://{parts.netloc}"


def make_content(subject: str, ordinal: int, size: int) -> bytes:
    """Exactly ``size`` ASCII bytes that name the subject and the ordinal (1-based)."""
    head = f"{subject} {ordinal} ".encode()
    return (head + b"." * max(size - len(head), 0))[:size]


def _cause(error: OSError) -> str:
    # asyncio's strerror is "Connect call failed (addr)": the errno's name says more
    if error.errno and error.errno > 0:
        return os.strerror(error.errno)
    return error.strerror or str(error)


@dataclass
class SubjectReport:
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    #: (epoch, seq) of the subject's snapshot read back after publishing, when readable
    last: tuple[int, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        last = None if self.last is None else {"epoch": self.last[0], "seq": self.last[1]}
        return {
            "sent": self.sent,
            "statuses": dict(self.statuses),
            "errors": self.errors,
            "last": last,
        }


@dataclass
class PublishReport:
    server: str
    subjects: dict[str, SubjectReport]
    elapsed_s: float = 0.0
    #: why publishing stopped early (DENY, unreachable, refused), else None
    failure: str | None = None
    #: the first few distinct error descriptions (HTTP errors, timeouts)
    error_samples: list[str] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for rep in self.subjects.values():
            total["sent"] += rep.sent
            total.update(rep.statuses)
            total["errors"] += rep.errors
        return dict(total)

    def as_dict(self) -> dict[str, Any]:
        sent = sum(r.sent for r in self.subjects.values())
        return {
            "server": self.server,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate": round(sent / self.elapsed_s, 1) if self.elapsed_s > 0 else None,
            "totals": self.totals(),
            "subjects": {s: r.as_dict() for s, r in self.subjects.items()},
            "failure": self.failure,
            "error_samples": self.error_samples,
        }


class _StopError(Exception):
    pass


class Publisher:
    def __init__(
        self,
        server: str,
        subjects: list[str],
        *,
        token: str | None,
        count: int,
        rate: float = 0.0,
        size: int = 100,
        concurrency: int = 16,
        timeout_s: float = 10.0,
        retained: bool = True,
        qos: str = "guaranteed",
    ) -> None:
        if not subjects:
            raise ValueError("subjects: give at least one subject, e.g. /a/1,/a/2")
        for subject in subjects:
            check_subject(subject)
        for name, value, low in (
            ("count", count, 0),
            ("size", size, 0),
            ("concurrency", concurrency, 1),
        ):
            if value < low:
                raise ValueError(f"{name}={value!r}: must be >= {low}")
        if not rate >= 0:
            raise ValueError(f"rate={rate!r}: must be >= 0 (0 = as fast as possible)")
        if not timeout_s > 0:
            raise ValueError(f"timeout={timeout_s!r}: must be > 0 seconds")
        if qos not in ("standard", "guaranteed"):
            raise ValueError(f"qos={qos!r}: must be 'standard' or 'guaranteed'")
        self.server = normalize_server(server)
        self.subjects = list(dict.fromkeys(subjects))
        self._token = token
        self.count, self.rate, self.size = count, rate, size
        self.concurrency, self.timeout_s = concurrency, timeout_s
        self.retained, self.qos = retained, qos
        self.report = PublishReport(self.server, {s: SubjectReport() for s in self.subjects})
        self._slot = 0
        self._t0 = 0.0

    def _params(self, subject: str) -> dict[str, str]:
        params = {"subject": subject}
        if self._token is not None:
            params["token"] = self._token
        return params

    def _sample(self, text: str) -> None:
        samples = self.report.error_samples
        if text not in samples and len(samples) < 5:
            samples.append(text)

    def _fail(self, reason: str) -> None:
        if self.report.failure is None:
            self.report.failure = reason
        raise _StopError

    async def _pace(self) -> None:
        if self.rate <= 0:
            return
        slot = self._slot
        self._slot += 1
        delay = self._t0 + slot / self.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _publish_subject(
        self, session: aiohttp.ClientSession, subject: str, gate: asyncio.Semaphore
    ) -> None:
        rep = self.report.subjects[subject]
        params = self._params(subject)
        params["retained"] = "true" if self.retained else "false"
        params["qos"] = self.qos
        url = self.server + "/rest/produce"
        async with gate:
            for ordinal in range(1, self.count + 1):
                if self.report.failure is not None:
                    raise _StopError
                await self._pace()
                rep.sent += 1
                try:
                    async with session.post(
                        url, params=params, data=make_content(subject, ordinal, self.size)
                    ) as resp:
                        body = await resp.read()
                        status = resp.status
                except aiohttp.ClientConnectorError as exc:
                    rep.errors += 1
                    self._fail(f"cannot reach {self.server}: {_cause(exc.os_error)}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    rep.errors += 1
                    self._sample(f"{type(exc).__name__}: {exc}".rstrip(": "))
                    continue
                self._answer(subject, rep, status, body)

    def _answer(self, subject: str, rep: SubjectReport, status: int, body: bytes) -> None:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if status != 200 or not isinstance(data, dict):
            rep.errors += 1
            if isinstance(data, dict):
                detail = str(data.get("error"))
            else:
                detail = body[:200].decode("utf-8", "replace")
            if status == 400:
                self._fail(f"the server refused {subject!r}: {detail}")
            self._sample(f"HTTP {status}: {detail}")
            return
        outcome = str(data.get("status"))
        rep.statuses[outcome] += 1
        if outcome == "DENY":
            self._fail(
                f"publishing on {subject!r} was denied (DENY): the token is missing or not "
                "entitled to publish"
            )

    async def _read_back(self, session: aiohttp.ClientSession, subject: str) -> None:
        """The subject's snapshot position after publishing (needs a consume-entitled token)."""
        try:
            async with session.get(
                self.server + "/rest/consume", params=self._params(subject)
            ) as r:
                if r.status != 200:
                    return
                data = await r.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return
        messages = data.get("messages") if isinstance(data, dict) else None
        if messages and isinstance(messages[-1], dict):
            last = messages[-1]
            if isinstance(last.get("epoch"), int) and isinstance(last.get("seq"), int):
                self.report.subjects[subject].last = (last["epoch"], last["seq"])

    async def run(self) -> PublishReport:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        self._t0 = time.monotonic()
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            gate = asyncio.Semaphore(self.concurrency)
            results = await asyncio.gather(
                *(self._publish_subject(session, s, gate) for s in self.subjects),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, _StopError):
                    raise result
            self.report.elapsed_s = time.monotonic() - self._t0
            if self.report.failure is None or not self.report.failure.startswith("cannot reach"):
                await asyncio.gather(*(self._read_back(session, s) for s in self.subjects))
        return self.report


def publish(server: str, subjects: list[str], **options: Any) -> PublishReport:
    """Run a :class:`Publisher` to completion (own event loop); see its arguments."""
    return asyncio.run(Publisher(server, subjects, **options).run())
