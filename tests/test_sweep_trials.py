"""sweeps/trials.py: what a trial logs, how a restored one cleans up and ends, and how it finds its runs."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient


def test_trials_starting_together_on_the_same_data_each_log_it_as_their_dataset(store):
    """MLflow looks a dataset up, then inserts it: runs logging one new dataset at once race on its unique key
    (2 trials of the demo did). Each of 4 writers, 12 rounds, must end linked to the round's dataset."""
    import threading

    from ganlab.tracking.server import served_store
    from ganlab.tracking.store import RunLogger, ensure_experiment, mlflow_client

    exp_id = ensure_experiment("datasets", store)
    writers, rounds = 4, 12
    barrier, errors, runs = threading.Barrier(writers), [], []

    def writer(uri):
        client = mlflow_client(uri)
        for r in range(rounds):
            run_id = client.create_run(exp_id).info.run_id
            runs.append((run_id, r))
            barrier.wait()  # all four log the round's new dataset together
            try:
                RunLogger(client, run_id).log_dataset(f"data-{r}", f"{r:016x}", {"dataset": "x"}, {"n": r})
            except Exception as exc:  # noqa: BLE001 - collected, asserted below
                errors.append(f"round {r}: {exc}")

    with served_store(store) as server:
        threads = [threading.Thread(target=writer, args=(server.uri,)) for _ in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not errors, errors[:2]
    client = MlflowClient(store)
    for run_id, r in runs:
        inputs = client.get_run(run_id).inputs.dataset_inputs
        assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [(f"data-{r}", f"{r:016x}")]


def test_a_restored_trial_checkpoint_leaves_no_temp_dir(tmp_path, monkeypatch):
    import json
    import tempfile

    from ray import tune

    from sweeps.trials import restored_checkpoint

    saved = tmp_path / "ckpt"
    saved.mkdir()
    (saved / "last.pt").write_bytes(b"weights")
    (saved / "meta.json").write_text(json.dumps({"run_id": "abc"}))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with restored_checkpoint(tune.Checkpoint.from_directory(str(saved))) as (local, meta):
        assert local.read_bytes() == b"weights" and meta == {"run_id": "abc"}
    assert list((tmp_path / "tmp").iterdir()) == []


def test_every_query_over_a_sweeps_children_reads_every_page(store, monkeypatch):
    """A sweep with more children than one page (PAGE_SIZE made 7 here, 1,000 in use): the end-of-sweep cleanup
    closes all of them and analysis reads all of them (cleanup read only the first page at 5,000 children)."""
    from mlflow.tracking import MlflowClient

    from analysis.runs import search, sweep_children
    from ganlab.tracking import schema
    from ganlab.tracking.store import ensure_experiment
    from sweeps.interrupts import close_unfinished_children

    monkeypatch.setattr(schema, "PAGE_SIZE", 7)
    client = MlflowClient(store)
    exp = ensure_experiment(None, store)
    parent = client.create_run(exp, tags={schema.KIND: "sweep"}).info.run_id
    children = [client.create_run(exp, tags={schema.PARENT_RUN: parent, schema.KIND: "prune"}).info.run_id
                for _ in range(23)]
    assert sorted(r.info.run_id for r in schema.child_runs(client, exp, parent)) == sorted(children)
    assert len(search([exp], schema.child_filter(parent), store)) == 23
    assert len(sweep_children(parent)) == 23
    close_unfinished_children(store, parent, "KILLED")
    assert {client.get_run(c).info.status for c in children} == {"KILLED"}


def test_a_trial_whose_worker_is_told_to_exit_ends_killed_not_failed(store):
    """Tune stops a trial by SIGTERM to its Ray worker, whose handler raises SystemExit inside the trial: its run
    was FAILED (the intermittent Ctrl-C result); a real error still ends FAILED."""
    from mlflow.tracking import MlflowClient

    from ganlab.tracking.store import ganlab_run

    ids = {}
    for name, exc in (("stopped", SystemExit(1)), ("broken", ValueError("bug"))):
        with pytest.raises(type(exc)), ganlab_run("train", run_name=name) as run:
            ids[name] = run.run_id
            raise exc
    client = MlflowClient(store)
    assert client.get_run(ids["stopped"]).info.status == "KILLED"
    assert client.get_run(ids["broken"]).info.status == "FAILED"
