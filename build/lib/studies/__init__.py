"""Studies built on ganlab, sweeps and analysis through their public functions: ``ganlab demo`` and
``ganlab study``, each step a ``ganlab`` subprocess, as a user would type it."""
