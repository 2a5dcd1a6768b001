"""The exactly-once chaos harness behind ``scripts/chaos.py`` (see docs/RELIABILITY.md).

* :mod:`chaoslib.content`: message bytes that name their subject and counter;
* :mod:`chaoslib.schedule`: the seeded fault schedule (pure: a seed replays it);
* :mod:`chaoslib.verdict`: the checker's verdict over the records read back (pure);
* :mod:`chaoslib.reader`: the read_committed reader of the target and audit topics;
* :mod:`chaoslib.procs`: the reference server, the peers and the publishers it drives;
* :mod:`chaoslib.deployment`: names, config and routes of the deployment, signal handling.
"""
