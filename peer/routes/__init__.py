"""Routes: subject -> topic, with key and options (``model``); files of them are read by
:mod:`peer.config.routesfile`."""
