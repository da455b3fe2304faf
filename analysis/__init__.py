"""Read ganlab's sweeps back from MLflow and judge them: ``runs`` (runs to pandas, through ganlab.tracking),
``aggregate`` (grid points over sources, judged by ganlab.metrics.verdict), ``best`` (after a pruning sweep: its
operating point registered), ``frontiers`` (a frontier search's answer read back), ``recipes`` (a recipe search's),
``pareto`` (fronts), ``shown`` (which points a large sweep labels), ``plots`` (figures), ``costs`` (what pruning
buys, pictured), ``report`` (the HTML report), ``results`` (``results.md``), ``cli`` (``ganlab analyze``)."""
