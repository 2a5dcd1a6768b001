"""Stand-ins for products the tests cannot have (MigratoryData's Python client)."""
