"""``ganlab prune`` / ``ganlab evaluate`` end to end on a tiny trained run in a real MLflow store."""


from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from ganlab.gan.checkpoint import load_checkpoint

from conftest import TINY_TRAIN, all_runs, run_main


def test_prune_with_finetune_logs_everything_and_keeps_zeros(trained, evaluator_32, tmp_path):
    uri, source = trained
    code, out, err = run_main(["prune", "--run-id", source, "--method", "percentage", "--q", "60",
                               "--finetune-epochs", "1", "--samples", "200", "--no-progress"])
    assert code == 0, err
    run_id = out.strip().splitlines()[-1].split("run_id: ")[1]
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.data.tags["ganlab.kind"] == "prune" and run.data.tags["ganlab.source_run_id"] == source
    assert run.data.params["method"] == "percentage" and run.data.params["q"] == "60.0"
    m = run.data.metrics
    assert m["sparsity"] == pytest.approx(0.6, abs=1e-3) and m["sparsity_generator"] == m["sparsity"]
    assert m["sparsity_discriminator"] == 0.0
    for metric in ("uqi", "ssim", "msssim"):
        for stat in ("mean", "median", "mode", "max", "min", "var", "std"):
            assert f"{metric}_{stat}" in m
        assert 0 < m[f"{metric}_mean"] < 1  # pruned + fine-tuned images differ from dense ones
    for key in ("fcd", "kid", "coverage", "class_kl", "size_dense_bytes", "size_sparse_bytes"):
        assert key in m
    assert m["size_sparse_bytes"] < m["size_dense_bytes"]
    assert len(client.get_metric_history(run_id, "loss_d")) > 0  # fine-tuning steps were logged
    arts = {a.path for d in ("sparsity", "samples", "checkpoints") for a in client.list_artifacts(run_id, d)}
    assert {"sparsity/generator.csv", "sparsity/generator.md", "samples/before_after.png",
            "checkpoints/last.pt"} <= arts
    md = Path(client.download_artifacts(run_id, "sparsity/generator.md", str(tmp_path))).read_text()
    assert md.startswith("|") and "| total" in md  # a markdown table, like the seed's slides
    ckpt = load_checkpoint(client.download_artifacts(run_id, "checkpoints/last.pt", str(tmp_path)))
    assert ckpt["pruned"] is True
    for key, w in ckpt["generator"].items():  # masks folded in, zeros kept through fine-tuning
        if key.endswith("weight") and w.dim() == 4:
            assert int((w == 0).sum()) == round(0.6 * w.numel())


def test_sensitivity_both_and_evaluate(trained, evaluator_32):
    uri, source = trained
    code, out, err = run_main(["prune", "--run-id", source, "--method", "sensitivity", "--s", "0.75",
                               "--target", "both", "--samples", "150", "--no-progress"])
    assert code == 0, err
    run = MlflowClient(uri).get_run(out.split()[-1])
    assert run.data.metrics["sparsity_discriminator"] > 0.45 and run.data.metrics["sparsity_generator"] > 0.45
    arts = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id, "sparsity")}
    assert "sparsity/discriminator.csv" in arts
    code, out, err = run_main(["evaluate", "--run-id", run.info.run_id, "--samples", "200", "--no-progress"])
    assert code == 0, err
    ev = MlflowClient(uri).get_run(out.split()[-1])
    assert ev.data.tags["ganlab.kind"] == "evaluate" and ev.data.tags["ganlab.source_run_id"] == run.info.run_id
    assert {"fcd", "kid", "coverage", "class_kl"} <= set(ev.data.metrics)


@pytest.mark.parametrize("args, needle", [
    (["--method", "sensitivity", "--s", "-1"], "s=-1.0"),
    (["--method", "percentage", "--q", "100"], "q=100.0"),
    (["--method", "percentage", "--q", "20", "--s", "1"], "exactly one"),
    (["--method", "percentage"], "exactly one"),
    (["--method", "random", "--q", "20"], "method='random'"),
    (["--method", "percentage", "--q", "20", "--target", "encoder"], "target='encoder'"),
    (["--method", "percentage", "--q", "20", "--samples", "2"], "samples=2 is out of range"),
    (["--method", "percentage", "--q", "20", "--device", "cuda"], "no CUDA GPU"),
])
def test_bad_prune_input_exits_2_without_a_run(trained, args, needle):
    uri, source = trained
    before = len(all_runs(uri))
    code, _, err = run_main(["prune", "--run-id", source, *args, "--no-progress"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err
    assert len(all_runs(uri)) == before


def test_a_checkpoint_without_a_generator_exits_2(trained, tmp_path):
    uri, source = trained
    before = len(all_runs(uri))
    ckpt = torch.load(MlflowClient(uri).download_artifacts(source, "checkpoints/last.pt", str(tmp_path)),
                      weights_only=True)
    del ckpt["generator"]
    torch.save(ckpt, tmp_path / "no-g.pt")
    code, _, err = run_main(["evaluate", "--checkpoint", str(tmp_path / "no-g.pt"), "--no-progress"])
    assert code == 2 and "no 'generator' entry" in err and len(err.strip().splitlines()) == 1
    assert len(all_runs(uri)) == before


def test_unknown_run_and_mismatched_checkpoint_exit_2(trained, tmp_path):
    uri, source = trained
    before = len(all_runs(uri))
    code, _, err = run_main(["prune", "--run-id", "0123456789abcdef", "--method", "percentage", "--q", "20"])
    assert code == 2 and "not found" in err and len(err.strip().splitlines()) == 1
    client = MlflowClient(uri)
    ckpt = torch.load(client.download_artifacts(source, "checkpoints/last.pt", str(tmp_path)), weights_only=True)
    ckpt["config"]["image_size"] = 64  # 32 px weights claiming a 64 px architecture
    torch.save(ckpt, tmp_path / "wrong.pt")
    code, _, err = run_main(["evaluate", "--checkpoint", str(tmp_path / "wrong.pt")])
    assert code == 2 and "does not match" in err
    assert len(all_runs(uri)) == before


def test_iterative_pruning_reaches_the_target(trained, evaluator_32):
    uri, source = trained
    code, out, err = run_main(["prune", "--run-id", source, "--method", "percentage", "--q", "50",
                               "--finetune-epochs", "1", "--iterative-steps", "2", "--samples", "150", "--no-progress"])
    assert code == 0, err
    run = MlflowClient(uri).get_run(out.split()[-1])
    assert run.data.params["iterative_steps"] == "2" and run.data.metrics["sparsity"] == pytest.approx(0.5, abs=2e-3)
    # two fine-tuning phases, one after each pruning step, each one epoch of the source's training images
    params = MlflowClient(uri).get_run(source).data.params
    steps_per_epoch = -(-int(params["limit"]) // int(params["batch_size"]))
    assert len(MlflowClient(uri).get_metric_history(run.info.run_id, "loss_d")) == 2 * steps_per_epoch


def test_inception_fid_without_weights_fails_clearly(trained):
    uri, source = trained
    before = len(all_runs(uri))
    code, _, err = run_main(["evaluate", "--run-id", source, "--samples", "150", "--inception", "--no-progress"])
    assert code == 2 and "Inception FID is not available" in err and len(err.strip().splitlines()) == 1
    assert len(all_runs(uri)) == before


def test_train_eval_every_logs_distribution_metrics_per_epoch(store, evaluator_32):
    from conftest import TINY_TRAIN

    code, out, err = run_main(["train", *TINY_TRAIN, "--epochs", "2", "--eval-every", "1", "--eval-samples", "150"])
    assert code == 0, err
    client = MlflowClient(store)
    run_id = out.split()[-1]
    for key in ("fcd", "kid", "coverage", "class_kl"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2]


def test_sizes_are_per_network_and_for_the_pruned_target(trained, evaluator_32):
    # pruning only the discriminator: its sparse size is below its dense size; the generator, not
    # pruned, would cost more stored sparsely (40 bits per non-zero) than densely.
    uri, source = trained
    code, out, err = run_main(["prune", "--run-id", source, "--method", "percentage", "--q", "70",
                               "--target", "discriminator", "--samples", "150", "--no-progress"])
    assert code == 0, err
    m = MlflowClient(uri).get_run(out.split()[-1]).data.metrics
    assert m["size_dense_bytes"] == m["size_dense_bytes_discriminator"]
    assert m["size_sparse_bytes"] == m["size_sparse_bytes_discriminator"] < m["size_dense_bytes"]
    assert m["size_sparse_bytes_generator"] > m["size_dense_bytes_generator"]
    assert m["sparsity"] == pytest.approx(0.7, abs=1e-3) and m["sparsity_generator"] == 0.0


def test_bn_recalibration_lowers_fcd_of_a_heavily_pruned_generator(trained, evaluator_32):
    # q = 90 % without fine-tuning: scored with the dense net's BatchNorm statistics the pruned generator
    # looks worse than its weights are; re-estimating them on fresh noise (no gradient step) lowers FCD
    uri, source = trained
    fcd, params = {}, {}
    for flag in ("--no-bn-recalibrate", "--bn-recalibrate"):
        code, out, err = run_main(["prune", "--run-id", source, "--method", "percentage", "--q", "90",
                                   "--samples", "500", "--no-progress", flag])
        assert code == 0, err
        run = MlflowClient(uri).get_run(out.split()[-1])
        fcd[flag], params[flag] = run.data.metrics["fcd"], run.data.params["bn_recalibrate"]
        assert run.data.metrics["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert params == {"--no-bn-recalibrate": "False", "--bn-recalibrate": "True"}
    assert fcd["--bn-recalibrate"] < 0.95 * fcd["--no-bn-recalibrate"], fcd


def test_lottery_ticket_rewinding_restarts_surviving_weights_from_the_kept_epoch(store, evaluator_32, tmp_path):
    from ganlab.gan.checkpoint import load_checkpoint
    from ganlab.pruning.magnitude import PruneConfig, prune_model
    from ganlab.runs.finetune import rewind
    from ganlab.runs.source import state_from_source

    code, out, err = run_main(["train", *TINY_TRAIN, "--epochs", "2", "--rewind-epoch", "1"])
    assert code == 0, err
    source = out.split()[-1]
    client = MlflowClient(store)
    kept = load_checkpoint(client.download_artifacts(source, "checkpoints/rewind_epoch_001.pt", str(tmp_path)))
    last = load_checkpoint(client.download_artifacts(source, "checkpoints/last.pt", str(tmp_path)))
    assert kept["epoch"] == 1 and last["epoch"] == 2
    assert not torch.equal(kept["generator"]["main.0.weight"], last["generator"]["main.0.weight"])

    # the rewind itself: masks from the trained weights, surviving weights (and buffers) from epoch 1
    state = state_from_source(source, tmp_path / "s", "cpu", store)
    prune_model(state.generator, "percentage", 50)
    rewind(state, kept)
    g = state.generator.state_dict()
    mask = g["main.0.weight_mask"]
    assert 0.45 < 1 - mask.mean().item() < 0.55
    assert torch.equal(g["main.0.weight_orig"], kept["generator"]["main.0.weight"])  # the mask multiplies it
    with torch.no_grad():
        state.generator.eval()(torch.zeros(1, 100, 1, 1))  # the forward hook recomputes weight = weight_orig * mask
    assert torch.equal(state.generator.main[0].weight, kept["generator"]["main.0.weight"] * mask)
    assert torch.equal(g["main.1.running_mean"], kept["generator"]["main.1.running_mean"])
    assert torch.equal(state.discriminator.state_dict()["main.0.weight"], kept["discriminator"]["main.0.weight"])

    code, out, err = run_main(["prune", "--run-id", source, "--method", "percentage", "--q", "50", "--finetune-epochs",
                               "1", "--iterative-steps", "2", "--rewind-epoch", "1", "--samples", "150",
                               "--no-progress"])
    assert code == 0, err
    run = client.get_run(out.split()[-1])
    assert run.data.params["rewind_epoch"] == "1" and run.data.metrics["sparsity"] == pytest.approx(0.5, abs=2e-3)
    assert PruneConfig(method="percentage", q=50, finetune_epochs=1, rewind_epoch=1).validate()


@pytest.mark.parametrize("args, needle", [
    (["--rewind-epoch", "5"], "beyond the source's 2 trained epoch"),
    (["--rewind-epoch", "0"], "has no weights of epoch 0 (it kept none)"),
    (["--rewind-epoch", "1", "--finetune-epochs", "0"], "rewind_epoch needs finetune_epochs >= 1"),
])
def test_bad_rewinding_exits_2_without_a_run(trained, args, needle):
    uri, source = trained
    before = len(all_runs(uri))
    code, _, err = run_main(["prune", "--run-id", source, "--method", "percentage", "--q", "50",
                             "--finetune-epochs", "1", *args, "--no-progress"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert len(all_runs(uri)) == before
