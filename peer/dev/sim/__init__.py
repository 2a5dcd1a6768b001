"""Reference MigratoryData server: the documented REST interface, for tests, demo and benchmarks.

This package imports nothing from the rest of ``peer``: it stands in for a separate product.

* ``model``: subjects, (epoch, seq), snapshot and the bounded history cache
* ``app``: the aiohttp application (REST produce/consume, faults, admin endpoints)
* ``server``: ``SimConfig``, ``SimServer`` (in-process) and ``serve`` (``mdpeer sim serve``)
* ``notify``: the notification channel, our own design (not MigratoryData's protocol)
* ``generator``: in-process load generator; ``publish``: REST publisher; ``bench``: numbers

See docs/REFERENCE-SERVER.md for the decisions taken where MigratoryData's docs are silent.
"""
