"""Reference MigratoryData server: the documented REST interface, for tests, demo and benchmarks.

This package imports nothing from the rest of ``peer``: it stands in for a separate product.
"""
