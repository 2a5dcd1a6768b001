"""The exactly-once chaos harness behind ``scripts/chaos.py`` (see docs/RELIABILITY.md).

* :mod:`peer.dev.chaos.main`: the command line; :mod:`peer.dev.chaos.run`: one run;
* :mod:`peer.dev.chaos.content`: message bytes that name their subject and counter;
* :mod:`peer.dev.chaos.schedule`: the seeded fault schedule (pure: a seed replays it);
* :mod:`peer.dev.chaos.verdict`: the publishers' ledgers and the run's verdict (pure), on top
  of the common exactly-once verdict (:mod:`peer.testing.verdict`);
* :mod:`peer.dev.chaos.reader`: the read_committed reader of the target and audit topics;
* :mod:`peer.dev.chaos.procs`: the reference server, the peers and the publishers it drives
  (:mod:`peer.testing` processes);
* :mod:`peer.dev.chaos.deployment`: names, config and routes of the deployment, the run dir.
"""
