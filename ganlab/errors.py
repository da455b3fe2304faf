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


class ModelFailure(GanlabError):
    """The model itself cannot be scored (its images are NaN or infinite: a diverged run's weights). A run
    already open for it ends FAILED with the reason in its ``ganlab.failure`` tag instead of being removed."""


class IncompleteSweep(GanlabError):
    """A sweep's trials ended with fewer than its spec names (Tune could not restore part of it): nothing is
    registered, its parent run is not FINISHED, and the message says how to restart it under that run."""


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM (``timeout``, a scheduler): unwinds like Ctrl-C, runs end KILLED."""


class StoreUnreachable(RuntimeError):
    """The tracking store stopped answering for good: runs are closed elsewhere, not through it."""


def interrupt_behind(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM (a KeyboardInterrupt) that ``exc`` is, or was raised while unwinding.

    A C extension's cleanup can fail on the half-done work an interrupt left (torch.save's zip
    writer: "unexpected pos"); its error then hides the interrupt, and a run the user stopped
    would end FAILED, exit 1, with a traceback."""
    return behind(exc, lambda e: isinstance(e, KeyboardInterrupt))


def stopped_behind(exc: BaseException | None) -> BaseException | None:
    """The stop that ``exc`` is or hides: an interrupt (``interrupt_behind``), or a SystemExit — what a process
    told to end raises on its way out, as a Ray worker does when Tune stops its trial (Ray's SIGTERM handler
    calls sys.exit). A run ended by either was KILLED, not FAILED."""
    return behind(exc, lambda e: isinstance(e, (KeyboardInterrupt, SystemExit)))


def behind(exc: BaseException | None, wanted) -> BaseException | None:
    """The first of ``exc`` and the exceptions behind it (its ``raise ... from`` cause, else the one it was raised
    while handling) for which ``wanted(e)`` is true, else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if wanted(exc):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
