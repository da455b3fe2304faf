"""Ray Tune sweeps over ganlab (imports ganlab, never analysis or studies): ``cli`` (``ganlab sweep``),
``spec`` (YAML specs, one grid per spec), ``search`` (Optuna and grid searchers), ``runner`` (served store, Ray,
parent run, tuner), ``trials`` (the Tune trainables), ``sources`` (dense sources from a training sweep),
``results`` (what a finished sweep leaves on its parent run), ``cluster`` (Ray on a cluster), ``storage`` (a
sweep's state in a folder or a bucket)."""
