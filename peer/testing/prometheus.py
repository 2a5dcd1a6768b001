"""A real Prometheus server (the ``prometheus`` binary, e.g. Debian's package) as a child
process, and its HTTP API: what tests use to check that peers are scraped and alerted on as
an operator's Prometheus would do it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from peer.testing.net import free_port, http_get, http_json
from peer.testing.process import ManagedProcess


class PrometheusNotInstalledError(FileNotFoundError):
    """No ``prometheus`` on PATH (scripts/_setup.sh installs Debian's package as root)."""


class PrometheusProcess(ManagedProcess):
    """``prometheus --config.file=CONFIG`` with its data in ``data_dir``, its web API on a free
    loopback port."""

    def __init__(
        self, config: Path, data_dir: Path, *, log: Path | None = None, grace: float = 10.0
    ) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusNotInstalledError(
                "no prometheus on PATH: install Debian's prometheus package (scripts/_setup.sh "
                "does, as root)"
            )
        self.port = free_port()
        super().__init__(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            name="prometheus",
            log=log,
            grace=grace,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        """Whether it answers ``/-/ready`` (config and rules loaded, storage open)."""
        return http_get(self.url + "/-/ready")[0] == 200

    def api(self, path: str, **params: object) -> Any:
        """The ``data`` of a successful ``/api/v1/<path>`` answer (an error raises)."""
        status, body = http_json("GET", f"{self.url}/api/v1/{path}", params)
        if status != 200 or not isinstance(body, dict) or body.get("status") != "success":
            raise AssertionError(f"prometheus /api/v1/{path} {params}: HTTP {status}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's series: (labels, value) each."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return [(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]

    def alerts(self, state: str = "firing") -> list[dict[str, str]]:
        """The labels of the alerts in ``state`` (firing, pending)."""
        return [dict(a["labels"]) for a in self.api("alerts")["alerts"] if a["state"] == state]

    def rules(self) -> dict[str, str]:
        """Every loaded rule's name and health (``ok`` once evaluated without error)."""
        return {r["name"]: r["health"] for g in self.api("rules")["groups"] for r in g["rules"]}

    def targets(self) -> dict[str, str]:
        """Every active scrape target's address and health (``up``, ``down``, ``unknown``)."""
        active = self.api("targets")["activeTargets"]
        return {t["labels"]["instance"]: t["health"] for t in active}


__all__ = ["PrometheusNotInstalledError", "PrometheusProcess"]
