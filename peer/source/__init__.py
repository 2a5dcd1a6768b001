"""Sources of MigratoryData messages: a small protocol (base) and its implementations."""
