"""``ganlab analyze`` (analysis/cli.py, analysis/report.py, the cost plots of analysis/costs.py) on a real MLflow
store: grid points over sources (analysis/aggregate.py), pictures, CSV front, HTML report rendered in Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from conftest import run_main


def _png(path: Path, shade: int) -> Path:
    Image.fromarray(np.full((12, 96, 3), shade, np.uint8)).save(path)
    return path


@pytest.fixture
def prune_sweep(store, tmp_path):
    """A sweep parent with prune children carrying the keys and artifacts `ganlab prune` logs."""
    from ganlab.tracking.store import RunContext, ganlab_run

    with ganlab_run("sweep", run_name="hand-made") as parent:
        pass
    points = [("sensitivity", "s", 0.5, 0.38, 30.0, 0.95), ("sensitivity", "s", 1.0, 0.68, 45.0, 0.90),
              ("percentage", "q", 30, 0.30, 28.0, 0.97), ("percentage", "q", 80, 0.80, 90.0, 0.70),
              ("percentage", "q", 60, 0.60, np.nan, 0.85)]  # one run without fcd: left out, no crash
    for method, key, amount, sparsity, fcd, ssim in points:
        recal = {"bn_recalibrate": True} if method == "sensitivity" else {}  # runs from before it: none
        with ganlab_run("prune", params={"method": method, key: amount, "finetune_epochs": 0, **recal},
                        ctx=RunContext.here(parent_run_id=parent.run_id)) as run:
            metrics = {"sparsity": sparsity, "ssim_mean": ssim, "msssim_mean": ssim, "uqi_mean": ssim,
                       "kid": fcd / 10 if fcd == fcd else np.nan, "coverage": 10 - 5 * sparsity}
            if fcd == fcd:
                metrics["fcd"] = fcd
            metrics.update(size_sparse_bytes_generator=1e6 * (1 - sparsity), size_dense_bytes_generator=1e6,
                           latency_ms_generator=10 - 5 * sparsity, dense_latency_ms_generator=10.0, dense_fcd=25.0)
            run.log_metrics({k: v for k, v in metrics.items() if v == v})
            table = pd.DataFrame({"layer": [0, 3, "total"], "type": ["ConvTranspose2d"] * 2 + [""],
                                  "parameters": [100, 50, 150], "nonzero": [60, 30, 90],
                                  "sparsity": [sparsity, sparsity, sparsity]})
            run.log_text(table.to_csv(index=False), "sparsity/generator.csv")
            run.log_file(_png(tmp_path / "strip_dense.png", 200), "samples")
            run.log_file(_png(tmp_path / "strip_pruned.png", int(255 * (1 - sparsity))), "samples")
            last = run.run_id
    # a `ganlab compress` file made from the last trial: it joins the bytes plot
    with ganlab_run("compress", params={"bits": 5, "scheme": "kmeans"}, tags={"ganlab.source_run_id": last}) as c:
        c.log_metrics({"file_bytes": 6e4, "fcd": 31.0, "dense_bytes": 1e6})
    return parent.run_id


def test_analyze_builds_fronts_pictures_and_report(prune_sweep, store, tmp_path):
    stale = tmp_path / "reports" / "hand-made" / "left_from_an_earlier_report.png"
    stale.parent.mkdir(parents=True)
    _png(stale, 10)
    code, out, err = run_main(["analyze", "--sweep", prune_sweep, "--out", str(tmp_path / "reports")])
    assert code == 0, err
    report = Path(out.strip().splitlines()[-1].split("report: ")[1])
    folder = report.parent
    for name in ("pareto_fcd.png", "pareto_ssim_mean.png", "pareto_kid.png", "pareto_coverage.png",
                 "sensitivity_vs_percentage.png", "pruning_strips.png", "layer_sparsity.png", "pareto_front.csv",
                 "cost_fcd.png"):
        assert (folder / name).is_file(), name
    front = pd.read_csv(folder / "pareto_front.csv")
    fcd_front = front[front.on_front.str.split(";").apply(lambda m: "fcd" in m)].sort_values("sparsity_mean")
    # each point is sparser than the one before and worse in fcd: none dominates another;
    # the run without fcd is left out. One source: n = 1, no std columns, no empty columns.
    assert fcd_front["sparsity_mean"].tolist() == [0.30, 0.38, 0.68, 0.80]
    assert fcd_front["run_ids"].notna().all() and (front["n"] == 1).all()
    assert not [c for c in front if c.endswith("_std")] and front.notna().any().all()
    assert len(pd.read_csv(folder / "grid_points.csv")) == 5
    cost = pd.read_csv(folder / "cost_fcd.csv")  # the trials and the compressed file on the bytes axis
    on_bytes = cost[cost.cost_axis == "size_sparse_bytes_generator"]
    assert sorted(on_bytes["cost"]) == pytest.approx(sorted([6e4, *(1e6 * (1 - s) for s in (0.38, 0.68, 0.30, 0.80))]))
    assert set(cost[cost.cost_axis == "latency_ms_generator"]["kind"]) == {"sensitivity", "percentage"}
    html = report.read_text()
    assert "quality against bytes stored and latency" in html
    assert "re-estimated on fresh noise before scoring): 2 of 5 runs" in html
    # the answer comes first: dense FCD 25, threshold 26.25: no point is within it, except none
    assert html.index("How far can this GAN be pruned") < html.index("<img")
    assert "threshold 26.2" in html and "no grid point stays within 5%" in html
    # images are files beside the report (a 10,000-trial report must not be a 100 MB page), every one there
    sources = re.findall(r"<img [^>]*src='([^']+)'", html)
    assert len(sources) == 10 and "base64" not in html and "<table" in html
    assert all((folder / src).is_file() and "/" not in src for src in sources)
    logged = {a.path for a in MlflowClient(store).list_artifacts(prune_sweep, "analysis")}
    assert "analysis/report.html" in logged and "analysis/pareto_fcd.png" in logged
    assert "analysis/" + stale.name not in logged  # only this report's files are uploaded


def test_training_sweep_report_ranks_by_the_sweeps_own_objective(store, tmp_path):
    from ganlab.tracking.store import RunContext, ganlab_run

    with ganlab_run("sweep", run_name="by-coverage", params={"sweep_kind": "train", "objective": "coverage",
                                                             "mode": "max"}) as parent:
        pass
    ids = {}
    for lr, fcd, coverage in ((1e-4, 20.0, 4.0), (2e-4, 50.0, 9.0), (4e-4, 35.0, 6.0)):
        with ganlab_run("train", params={"lr_d": lr}, tags={"ganlab.status": "ok"},
                        ctx=RunContext.here(parent_run_id=parent.run_id)) as run:
            run.log_metrics({"fcd": fcd, "coverage": coverage})
            ids[lr] = run.run_id
    code, out, err = run_main(["analyze", "--sweep", parent.run_id, "--out", str(tmp_path / "r")])
    assert code == 0, err
    html = Path(out.strip().splitlines()[-1].split("report: ")[1]).read_text()
    # ranked by coverage (higher is better), not by a hard-coded fcd
    assert f"Best trial <code>{ids[2e-4]}</code>: coverage = 9.00" in html


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_report_renders_in_headless_chromium_with_every_image(prune_sweep, tmp_path):
    if _chromium() is None:  # a missing browser fails loudly: this test must not pass by skipping
        pytest.fail("headless Chromium is not installed: run `make browser` or `apt-get install chromium`")
    code, out, _ = run_main(["analyze", "--sweep", prune_sweep, "--out", str(tmp_path / "reports")])
    report = Path(out.strip().splitlines()[-1].split("report: ")[1])
    probe = report.with_name("probe.html")
    check = ("<script>window.addEventListener('load',()=>{const imgs=[...document.images];"
             "document.title='images='+imgs.length+' broken='+imgs.filter(i=>!(i.complete&&i.naturalWidth>0)).length"
             "+' width='+Math.min(...imgs.map(i=>i.naturalWidth))"
             # at 1280 px nothing may stick out of the page (a wide table scrolls inside its own box)
             "+' overflow='+[...document.querySelectorAll('body *')].filter(e=>!e.closest('.table-box')"
             "&&e.getBoundingClientRect().right>document.documentElement.clientWidth+1).length"
             "+' pagewidth='+Number(document.documentElement.scrollWidth>document.documentElement.clientWidth);"
             "});</script></body>")
    probe.write_text(report.read_text().replace("</body>", check))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chrome'}",
             "--virtual-time-budget=5000"]
    dom = subprocess.run([_chromium(), *flags, "--window-size=1280,2400", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    title = re.search(r"<title>(.*?)</title>", dom).group(1)
    images, broken, width, overflow, page_scrolls = (int(v) for v in re.findall(r"=(\d+)", title))
    assert images == 10 and broken == 0 and width > 50, title
    assert overflow == 0 and page_scrolls == 0, title
    assert "{'" not in report.read_text() and "Trials by status: {" not in report.read_text()  # no Python reprs
    shot = tmp_path / "report.png"
    subprocess.run([_chromium(), *flags, "--window-size=1280,2400", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and Image.open(shot).size == (1280, 2400)


def test_unknown_sweep_and_empty_sweep_exit_2(store):
    code, _, err = run_main(["analyze", "--sweep", "does-not-exist"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not found" in err
    from ganlab.tracking.store import ganlab_run

    with ganlab_run("sweep") as parent:
        pass
    code, _, err = run_main(["analyze", "--sweep", parent.run_id])
    assert code == 2 and "no runs" in err
    code, _, err = run_main(["analyze", "--experiment", "nope"])
    assert code == 2 and "experiment 'nope' not found" in err


def test_runs_missing_a_param_are_left_out_with_a_warning_not_a_crash(store, tmp_path):
    from ganlab.tracking.store import RunContext, ganlab_run

    with ganlab_run("sweep", run_name="sparse-params") as parent:
        pass
    points = (("percentage", "q", 30, 0.3), ("percentage", "q", 70, 0.7), (None, None, 0, 0.5))
    for method, key, amount, sparsity in points:
        params = {"method": method, key: amount} if method else {}  # no finetune_epochs anywhere; one has no method
        with ganlab_run("prune", params=params, ctx=RunContext.here(parent_run_id=parent.run_id)) as run:
            run.log_metrics({"sparsity": sparsity, "fcd": 10 + 50 * sparsity})
    with pytest.warns(UserWarning, match="1 prune run"):
        code, out, err = run_main(["analyze", "--sweep", parent.run_id, "--out", str(tmp_path / "r")])
    assert code == 0, err
    front = pd.read_csv(Path(out.strip().splitlines()[-1].split("report: ")[1]).parent / "pareto_front.csv")
    assert sorted(front["sparsity_mean"]) == [0.3, 0.7]
    # nothing usable at all: exit 2, and no empty report folder left behind
    with ganlab_run("sweep", run_name="nothing-usable") as empty:
        pass
    with ganlab_run("prune", params={}, ctx=RunContext.here(parent_run_id=empty.run_id)) as run:
        run.log_metrics({"fcd": 1.0})
    code, _, err = run_main(["analyze", "--sweep", empty.run_id, "--out", str(tmp_path / "r")])
    assert code == 2 and not (tmp_path / "r" / "nothing-usable").exists()


def test_several_sources_aggregate_per_grid_point_with_mean_std_n_and_the_answer(store, tmp_path):
    # two dense sources (dense fcd 20 and 30, mean 25: threshold 26.25), three grid points on each
    from ganlab.tracking.store import RunContext, ganlab_run

    with ganlab_run("sweep", run_name="two-sources") as parent:
        pass
    fcds = {("percentage", "q", 30): (19.0, 31.0), ("percentage", "q", 80): (40.0, 60.0),
            ("sensitivity", "s", 1.0): (22.0, 28.5)}
    sparsity = {30: (0.30, 0.30), 80: (0.80, 0.80), 1.0: (0.66, 0.70)}
    for source, dense in enumerate((20.0, 30.0)):
        for (method, key, amount), values in fcds.items():
            with ganlab_run("prune", params={"method": method, key: amount, "finetune_epochs": 0,
                                             "bn_recalibrate": True}, ctx=RunContext.here(parent_run_id=parent.run_id),
                            tags={"ganlab.source_run_id": f"src{source}"}) as run:
                run.log_metrics({"sparsity": sparsity[amount][source], "fcd": values[source], "dense_fcd": dense,
                                 "ssim_mean": 1 - sparsity[amount][source] / 2})
    code, out, err = run_main(["analyze", "--sweep", parent.run_id, "--out", str(tmp_path / "r"),
                               "--ui-url", "http://127.0.0.1:5000"])
    assert code == 0, err
    report = Path(out.strip().splitlines()[-1].split("report: ")[1])
    points = pd.read_csv(report.parent / "grid_points.csv").set_index("point")
    s1 = points.loc["sensitivity s=1"]
    assert s1["n"] == 2 and s1["fcd_mean"] == pytest.approx(25.25) and s1["fcd_std"] == pytest.approx(
        np.std([22.0, 28.5], ddof=1)) and s1["sparsity_mean"] == pytest.approx(0.68)
    assert s1["dense_fcd_mean"] == pytest.approx(25.0)
    front = pd.read_csv(report.parent / "pareto_front.csv")
    assert {"fcd_mean", "fcd_std", "n", "sparsity_std"} <= set(front) and (front["n"] == 2).all()
    html = report.read_text()
    # the answer per method: sensitivity s=1 (25.25 <= 26.25) at 68.0 +- 2.8 %, percentage q=30 (25.0)
    assert "sparsity <b>68.0 ± 2.8 %</b>" in html and "sparsity <b>30.0 ± 0.0 %</b>" in html
    assert "http://127.0.0.1:5000/#/experiments/" in html  # run ids link to the MLflow UI...
    assert "?workflowType=machine_learning" in html  # ...on its model-training views (3.17 opens GenAI otherwise)
    code, _, err = run_main(["analyze", "--sweep", parent.run_id, "--tolerance", "-1"])
    assert code == 2 and "--tolerance" in err


def test_a_large_sweep_draws_strips_for_a_few_front_points_only(store, tmp_path):
    """Past ALL_SHOWN grid points the strips and per-layer heatmap show the FCD front evenly thinned to MAX_SHOWN
    (and the operating point): their artifacts are the only ones fetched, the strip image stays readable."""
    from analysis.shown import ALL_SHOWN, MAX_SHOWN
    from ganlab.tracking.store import RunContext, ganlab_run

    with ganlab_run("sweep", run_name="large") as parent:
        pass
    n = ALL_SHOWN + 36
    strip = _png(tmp_path / "strip_pruned.png", 90)
    dense = _png(tmp_path / "strip_dense.png", 200)
    for i in range(n):  # every point on the FCD front: sparser, and worse
        sparsity = (i + 1) / (n + 1)
        with ganlab_run("prune", params={"method": "percentage", "q": 100 * sparsity, "bn_recalibrate": True},
                        ctx=RunContext.here(parent_run_id=parent.run_id)) as run:
            run.log_metrics({"sparsity": sparsity, "fcd": 20 + 30 * sparsity, "dense_fcd": 20.0})
            table = pd.DataFrame({"layer": [0, "total"], "type": ["ConvTranspose2d", ""], "sparsity": [sparsity] * 2})
            run.log_text(table.to_csv(index=False), "sparsity/generator.csv")
            run.log_file(dense, "samples")
            run.log_file(strip, "samples")
    code, out, err = run_main(["analyze", "--sweep", parent.run_id, "--out", str(tmp_path / "r")])
    assert code == 0, err
    folder = Path(out.strip().splitlines()[-1].split("report: ")[1]).parent
    assert len(pd.read_csv(folder / "pareto_front.csv")) == n  # the table keeps the whole front
    shown = MAX_SHOWN - 1  # no verdicts here, so no operating point
    # one row per shown point plus the dense one: 12 px images scaled to 96, 6 px apart
    assert Image.open(folder / "pruning_strips.png").height == (shown + 1) * 102 + 6
    html = (folder / "report.html").read_text()
    assert f"Shown: the {shown} grid points on the FCD front and the operating point, of {n}" in html
    assert f"The {n} grid points on the FCD front; all {n} on some front are in" in html


def test_labels_in_a_large_sweep_go_to_the_front_and_the_operating_point():
    from analysis.shown import labelled_points

    points = pd.DataFrame({"point": [f"p{i}" for i in range(40)], "sparsity_mean": np.linspace(0, 0.9, 40),
                           "control": False, "verdict": "worse", "ratio": np.linspace(1.3, 2, 40)})
    front = points.iloc[[3, 7, 9]].assign(on_front=["fcd", "fcd;ssim_mean", "ssim_mean"])
    assert labelled_points(points, front, "fcd") == {"p3", "p7", "p0"}  # p0: the lowest ratio, the operating point
    assert labelled_points(points, front, "ssim_mean") == {"p7", "p9", "p0"}  # each plot its own front
    assert labelled_points(points.iloc[:10], front) == {f"p{i}" for i in range(10)}  # a small sweep: all


def test_distances_spanning_orders_of_magnitude_go_on_a_log_axis():
    from analysis.plots import log_scale

    assert log_scale("fcd", [13.6, 14.0, 60.1], [331.0])  # the dense band beside collapsed generators
    assert not log_scale("fcd", [13.6, 14.0, 60.1])  # within 8x: a linear axis shows it fine
    assert not log_scale("ssim_mean", [0.05, 0.99])  # a similarity in [0, 1] stays linear
    assert not log_scale("kid", [0.0, 5.0, 300.0])  # a zero has no place on a log axis
    assert log_scale("kid", [1.5, float("nan"), 30.5])  # missing values are ignored


@pytest.mark.parametrize("hostile", ["../../escaped", "/tmp/ganlab-escaped-report"])
def test_a_sweep_renamed_by_anyone_with_store_access_cannot_steer_the_report_outside_out(
        prune_sweep, store, tmp_path, hostile, monkeypatch):
    from mlflow.tracking import MlflowClient

    MlflowClient(store).update_run(prune_sweep, name=hostile)  # names in the store are data
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "reports" / "inner"
    code, printed, err = run_main(["analyze", "--sweep", prune_sweep, "--out", str(out)])
    assert code == 0, err
    report = Path(printed.strip().splitlines()[-1].split("report: ")[1])
    assert report.resolve().parent.parent == out.resolve()  # one folder inside --out
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/ganlab-escaped-report").exists()


def test_per_draw_values_are_read_in_bulk_in_step_order_for_every_run(store):
    """analysis.runs.draws reads a database store in bulk (chunks of BULK_RUNS runs): each run's values, in step
    order, the same as MLflow's per-run history; a run without draws has none."""
    from mlflow.tracking import MlflowClient

    import analysis.runs as runs_module
    from ganlab.tracking.store import ganlab_run

    ids = []
    for k in range(5):
        with ganlab_run("prune") as run:
            if k < 4:
                for step in (2, 0, 1):  # logged out of order
                    run.log_metrics({"fcd_draw": 10 * k + step, "dense_fcd_draw": 5.0 + step}, step=step)
            ids.append(run.run_id)
    old, runs_module.BULK_RUNS = runs_module.BULK_RUNS, 2  # several chunks
    try:
        got = runs_module.draws(ids)
    finally:
        runs_module.BULK_RUNS = old
    client = MlflowClient(store)
    for run_id in ids[:4]:
        for name in ("fcd", "dense_fcd"):
            want = [m.value for m in sorted(client.get_metric_history(run_id, f"{name}_draw"), key=lambda m: m.step)]
            assert got[run_id][name] == want and len(want) == 3
    assert got[ids[4]] == {}


def test_the_verdict_reads_fcd_infinity_when_the_runs_logged_it_and_fcd_for_older_runs():
    """Two sources at q = 50: FCD at 1,000 images says 1.04 (within), FCD∞ says 1.12 (worse: the bias both sides
    share pulled FCD's ratio toward 1). The verdict reads FCD∞ and says which figure it read; runs without FCD∞
    draws (older sweeps) are judged on FCD as before."""
    from analysis import aggregate

    runs = pd.DataFrame([{"run_id": f"r{s}", "param_method": "percentage", "param_q": "50.0",
                          "param_target": "generator", "param_finetune_epochs": "0", "param_bn_recalibrate": "True",
                          "ganlab_source_run_id": f"src{s}", "sparsity": 0.5, "fcd": 20.8, "dense_fcd": 20.0}
                         for s in range(2)])
    points = aggregate.grid_points(runs, ["fcd"])
    wobble = [0.0, 0.002, -0.002, 0.001, -0.001]
    draws = {f"r{s}": {"fcd": [20.8 + w for w in wobble], "dense_fcd": [20.0 + w for w in wobble],
                       "fcd_inf": [16.8 + s * 0.01 + w for w in wobble], "dense_fcd_inf": [15.0 + w for w in wobble]}
             for s in range(2)}
    judged = aggregate.add_verdicts(points, runs, draws).iloc[0]
    assert judged["figure"] == "FCD∞" and judged["verdict"] == "worse"
    assert judged["ratio"] == pytest.approx(1.12, abs=0.01)
    older = {run: {k: v for k, v in d.items() if "inf" not in k} for run, d in draws.items()}
    judged = aggregate.add_verdicts(points, runs, older).iloc[0]
    assert judged["figure"] == "FCD" and judged["verdict"] == "within" and judged["ratio"] == pytest.approx(1.04)


def test_the_answer_folds_a_recipe_searchs_one_source_trials_into_one_line():
    from analysis.results import verdict_lines

    def point(family, sparsity, n, verdict, ratio):
        return {"family": family, "point": f"{family} at {sparsity}", "n": n, "control": False, "verdict": verdict,
                "sparsity_mean": sparsity, "ratio": ratio, "ratio_low": ratio * 0.98, "ratio_high": ratio * 1.02,
                "ratio_dense": ratio, "ratio_dense_low": ratio * 0.98, "ratio_dense_high": ratio * 1.02,
                "fcd_mean": 12 * ratio, "reference": "dense"}

    points = pd.DataFrame([point("percentage", 0.2, 5, "within", 1.01), point("percentage", 0.5, 5, "worse", 1.8),
                           point("ft lr x0.3", 0.8, 1, "worse", 3.64), point("ft lr x0.9", 0.8, 1, "worse", 4.93)])
    text = "\n".join(verdict_lines(points, 0.05))
    assert "- **percentage**: highest point judged within 20.0 % (percentage at 0.2: ratio 1.010" in text
    assert "crossing **s*" not in text  # these points carry no per-source ratios: no crossing is claimed
    assert "**ft lr x0.3**:" not in text and "**ft lr x0.9**:" not in text
    assert "- **2 recipes tried on one source**" in text and "ratios 3.64-4.93 at 80%" in text
    assert "| ft lr x0.9 " in text  # still in the table
    alone = "\n".join(verdict_lines(points[points["n"] == 1], 0.05))  # one source only: nothing to fold beside
    assert "- **ft lr x0.3**: no point is within" in alone
