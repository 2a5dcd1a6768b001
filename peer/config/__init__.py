"""Settings: the peer's, loaded from a file, the environment and flags (``load``), validated
(``settings``), with secrets (``secret``) and the vendor connector's JSON (``connector``)."""
