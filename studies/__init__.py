"""Commands built on ganlab, sweeps and analysis through their public functions: ``sweep_cli`` (``ganlab sweep``: the
engine's sweep, then analysis's step after it), ``demo`` (``ganlab demo``) and ``study`` (``ganlab study``; its
steps and resumable state in ``steps``), each of those two a chain of ``ganlab`` subprocesses, as a user would type
them; sweep specs live in sweeps/specs/."""
