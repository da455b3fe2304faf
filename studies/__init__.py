"""Studies built on ganlab, sweeps and analysis through their public functions: ``demo`` (``ganlab demo``) and
``study`` (``ganlab study``), each step a ``ganlab`` subprocess, as a user would type it; their sweep specs in
``specs/``."""
