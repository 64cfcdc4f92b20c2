"""The test suite (`make test`); shared builders live in ``helpers`` and ``vla_helpers``."""
