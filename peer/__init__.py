"""mdpeer: stream MigratoryData subjects into Apache Kafka topics, exactly once."""

__version__ = "0.1.0"
