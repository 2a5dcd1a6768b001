# Sourced by scripts/test and scripts/demo: installs what a fresh machine lacks.
# uv (from PyPI via pip), the locked Python dependencies, Java + Maven when absent (Debian
# packages; the Kafka jars themselves come from Maven Central via `mdpeer kafka install`), and
# Prometheus + promtool when absent (Debian's prometheus package: the alert rules' checks and
# the real-Prometheus test, tests/test_monitoring.py and tests/test_prometheus.py).
set -euo pipefail

if command -v uv >/dev/null 2>&1; then
  UV=(uv)
else
  echo "setup: installing uv with pip" >&2
  python3 -m pip install --quiet --disable-pip-version-check uv >&2
  if command -v uv >/dev/null 2>&1; then UV=(uv); else UV=(python3 -m uv); fi
fi

if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  if [ -z "${MDPEER_BOOTSTRAP:-}" ] && [ -z "${KAFKA_HOME:-}" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Java 17 and Maven (Debian packages)" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven >&2
  fi
fi

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Prometheus and promtool (Debian package)" >&2
    apt-get update -qq >&2
    # no recommends: the node exporter and the web consoles are not needed here
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
  fi
fi

"${UV[@]}" sync --locked --quiet
