"""Errors a user can cause. The CLI prints their message on one line and exits with code 2."""


class GanlabError(Exception):
    """Bad input: a config value, a missing dataset, a checkpoint or run that does not fit."""


class ConfigError(GanlabError):
    """A configuration key or value is not valid; the message names it and what is allowed."""


class DataNotFoundError(GanlabError):
    """A dataset is not on disk and cannot be downloaded."""


class DataError(GanlabError):
    """Dataset files are there but cannot be trusted or read (corrupt, truncated, foreign)."""


class CheckpointError(GanlabError):
    """A checkpoint cannot be read, or does not match the model it is loaded into."""


class RunNotFoundError(GanlabError):
    """An MLflow run id (or experiment, or sweep) does not exist in the tracking store."""


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM (``timeout``, a scheduler): unwinds like Ctrl-C, runs end KILLED."""


class StoreUnreachable(RuntimeError):
    """The tracking store stopped answering for good: runs are closed elsewhere, not through it."""
