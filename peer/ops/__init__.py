"""What operators see of a running peer: logs, metrics and health endpoints."""
