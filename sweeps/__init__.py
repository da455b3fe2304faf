"""Ray Tune sweeps over ganlab, the engine (imports ganlab, never analysis or studies; ``ganlab sweep`` is
studies/sweep_cli.py): ``spec`` (YAML specs, one grid per spec), ``grid`` (a pruning grid's points and frontier
families), ``search`` (Optuna and grid searchers), ``frontier`` (the bisection of sparsity to each method's
frontier), ``runner`` (served store, Ray, parent run, fit, resume), ``interrupts`` (Ctrl-C and SIGTERM through
Tune's graceful stop, runs closed), ``tuners`` (the Tuners, their RunConfig, the store's watch), ``progress`` (the
line a running sweep shows), ``trials`` (the Tune trainables), ``sources`` (dense sources from a training sweep,
its repeats' bookkeeping), ``results`` (runs closed, a training sweep's best trial), ``cluster`` (Ray on a
cluster), ``storage`` (the driver's typed state, ``SweepState``, in a folder or a bucket)."""
