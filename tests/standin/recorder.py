"""A listener of the client API that records every callback, for the tests to wait on."""

from __future__ import annotations

import threading
from typing import Any

from peer.testing import wait_until


class Recorder:
    """``on_message`` and ``on_status`` as the documented listener has them; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: list[Any] = []
        self.statuses: list[tuple[str, Any]] = []

    def on_message(self, message: Any) -> None:
        with self._lock:
            self.messages.append(message)

    def on_status(self, status: str, info: Any) -> None:
        with self._lock:
            self.statuses.append((status, info))

    def count(self, status: str, info: Any = None) -> int:
        with self._lock:
            return sum(1 for s, i in self.statuses if s == status and info in (None, i))

    def subjects(self) -> list[str]:
        with self._lock:
            return [m.get_subject() for m in self.messages]

    def wait(self, status: str, info: Any = None, *, times: int = 1, timeout: float = 20) -> None:
        wait_until(
            lambda: self.count(status, info) >= times,
            timeout,
            f"{status} {info or ''} x{times} (seen: {self.statuses[-10:]})",
        )

    def wait_message(self, subject: str, *, times: int = 1, timeout: float = 20) -> None:
        wait_until(
            lambda: self.subjects().count(subject) >= times,
            timeout,
            f"a message on {subject} (seen: {self.subjects()[-10:]})",
        )
