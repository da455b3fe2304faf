"""Pruning that pays: channel pruning (Torch-Pruning) against a dense reference, the Deep-Compression
file's exact round trip, generate, and ONNX in onnxruntime against torch (ganlab/pruning/compress.py, channel.py;
runs/compress.py)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from ganlab.config import TrainConfig
from ganlab.gan.models import build_models, prunable_layers
from ganlab.pruning.channel import channel_prune, macs
from ganlab.pruning.compress import compress_generator, read_generator
from ganlab.pruning.magnitude import percentage_prune

from conftest import all_runs, run_main


def _trained_like(size=32, ngf=16, seed=0):
    """A generator with non-trivial BatchNorm statistics (as after training), in eval mode."""
    torch.manual_seed(seed)
    g = build_models(TrainConfig(image_size=size, ngf=ngf).resolved())[0]
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return g.eval()


def _kept_channels(dense, pruned):
    """Which dense channels each pruned hidden layer kept, found by matching its filters exactly."""
    kept, previous = [], None
    for (_, d), (_, p) in list(zip(prunable_layers(dense), prunable_layers(pruned)))[:-1]:
        wd = d.weight.detach() if previous is None else d.weight.detach()[previous]
        wp = p.weight.detach()
        idx = [next(m for m in range(wd.shape[1]) if torch.equal(wd[:, m], wp[:, j])) for j in range(wp.shape[1])]
        kept.append(idx)
        previous = idx
    return kept


@pytest.mark.parametrize("size, ratio", [(32, 0), (64, 0), (64, 0.5)])
def test_macs_count_each_transposed_conv_over_its_input_positions(size, ratio):
    # reference: C_in x C_out x k^2 x H_in x W_in per transposed conv (what it multiplies); the input
    # side is 1, then 4, doubling; Torch-Pruning's counter gave 4x this for each stride-2 layer
    g = channel_prune(_trained_like(size), ratio)
    expected, side = 0, 1
    for _, m in prunable_layers(g):
        expected += m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1] * side * side
        side = 4 if side == 1 else side * 2
    assert macs(g) == expected


@pytest.mark.parametrize("size, ratio", [(32, 0.5), (64, 0.25), (32, 0.75)])
def test_channel_pruning_equals_the_dense_net_with_those_channels_silenced(size, ratio):
    # Reference: the dense generator with each removed channel's BatchNorm scale and shift set to 0
    # (its ReLU output is then 0, so the next layer sees nothing from it) computes the same images.
    dense = _trained_like(size, ngf=8)
    pruned = channel_prune(copy.deepcopy(dense), ratio)
    widths = pruned.widths
    assert widths == [round(w * (1 - ratio)) for w in dense.widths]
    silenced = copy.deepcopy(dense)
    for (index, _), keep in zip(prunable_layers(silenced)[:-1], _kept_channels(dense, pruned)):
        bn = silenced.main[index + 1]
        removed = sorted(set(range(bn.num_features)) - set(keep))
        bn.weight.data[removed] = 0
        bn.bias.data[removed] = 0
    z = torch.randn(16, 100, 1, 1)
    with torch.no_grad():
        out = pruned(z)
        assert out.shape == dense(z).shape
        assert torch.allclose(out, silenced(z), atol=1e-5)


@pytest.mark.parametrize("scheme, bits", [("kmeans", 5), ("kmeans", 2), ("linear", 8)])
def test_the_file_decompresses_to_exactly_the_quantized_weights(tmp_path, scheme, bits):
    g = percentage_prune(_trained_like(32, ngf=16), 80)
    for _, layer in prunable_layers(g):
        torch.nn.utils.prune.remove(layer, "weight")
    cfg = TrainConfig(image_size=32, ngf=16).resolved()
    data, quantized = compress_generator(g, cfg, bits, scheme)
    path = tmp_path / "g.glz"
    path.write_bytes(data)
    restored, restored_cfg = read_generator(path)
    assert restored_cfg == cfg and os.path.getsize(path) == len(data)
    state = restored.state_dict()
    assert state.keys() == quantized.keys()
    for key, tensor in quantized.items():
        assert torch.equal(state[key], tensor), key  # bit for bit
    for _, layer in prunable_layers(restored):
        w = layer.weight.detach()
        assert float((w == 0).float().mean()) >= 0.8 - 1e-3  # the zeros survive
        if scheme == "kmeans":
            assert len(torch.unique(w[w != 0])) <= 2 ** bits  # shared weights: at most 2^bits values
    original = {k: v for k, v in g.state_dict().items() if k.endswith("weight") and v.dim() == 4}
    for key, w in original.items():
        nz = w[w != 0].double()
        err = quantized[key][w != 0].double() - nz
        if scheme == "linear":  # rounding to levels of step max|w| / (2^(bits-1) - 1): at most half a step
            assert err.abs().max() <= nz.abs().max() / (2 ** (bits - 1) - 1) / 2 * (1 + 1e-5)
        else:  # Lloyd's iterations never raise the squared error of their start, linear levels on [min, max]
            grid = torch.linspace(float(nz.min()), float(nz.max()), 2 ** bits, dtype=torch.float64)
            start = grid[(nz[:, None] - grid[None, :]).abs().argmin(1)] - nz
            assert float(err.square().mean()) <= float(start.square().mean()) * (1 + 1e-4)


@pytest.mark.parametrize("damage", ["truncated", "foreign", "corrupt-header", "missing"])
def test_a_damaged_or_foreign_file_exits_2_in_one_line(tmp_path, damage):
    g = _trained_like(32, ngf=8)
    data, _ = compress_generator(g, TrainConfig(image_size=32, ngf=8).resolved(), 4, "kmeans")
    path = tmp_path / "g.glz"
    path.write_bytes({"truncated": data[: len(data) * 2 // 3], "foreign": b"\x80\x04" + data[2:],
                      "corrupt-header": data[:12] + b"}" + data[13:], "missing": data}[damage])
    if damage == "missing":
        path.unlink()
    code, _, err = run_main(["generate", "--model", str(path), "--n", "4", "--out", str(tmp_path / "x.png")])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "x.png").exists()


def test_channel_prune_run_logs_costs_and_its_checkpoint_loads_everywhere(trained, evaluator_32, tmp_path):
    uri, source = trained
    code, out, err = run_main(["prune", "--run-id", source, "--method", "channel", "--ratio", "0.5",
                               "--finetune-epochs", "1", "--samples", "150", "--no-progress"])
    assert code == 0, err
    run_id = out.split()[-1]
    run = MlflowClient(uri).get_run(run_id)
    m, p = run.data.metrics, run.data.params
    assert p["method"] == "channel" and p["ratio"] == "0.5" and p["widths_generator"] == "32,16,8"
    assert p["latency_batch"] == "64" and int(p["latency_threads"]) >= 1
    assert m["macs_generator"] < m["dense_macs_generator"] / 2.5  # halving in and out channels: ~1/4
    assert m["params_generator"] < m["dense_params_generator"] / 2
    assert m["latency_ms_generator"] > 0 and m["dense_latency_ms_generator"] > 0
    assert m["sparsity_generator"] == pytest.approx(1 - m["params_generator"] / m["dense_params_generator"], abs=0.01)
    assert m["size_sparse_bytes"] < m["size_dense_bytes"] / 2
    # the reduced architecture travels in the checkpoint: evaluate, resume and prune it again
    code, _, err = run_main(["evaluate", "--run-id", run_id, "--samples", "150", "--no-progress"])
    assert code == 0, err
    code, _, err = run_main(["train", "--resume", run_id, "--epochs", "4", "--no-progress"])
    assert code == 0, err
    code, out, err = run_main(["prune", "--run-id", run_id, "--method", "percentage", "--q", "50",
                               "--samples", "150", "--no-progress"])
    assert code == 0, err
    assert MlflowClient(uri).get_run(out.split()[-1]).data.params["widths_generator"] == "32,16,8"


def test_compress_run_generate_and_onnx_in_onnxruntime(trained, evaluator_32, tmp_path):
    import onnxruntime as ort

    uri, source = trained
    code, out, err = run_main(["prune", "--run-id", source, "--method", "percentage", "--q", "80",
                               "--samples", "150", "--no-progress"])
    pruned_id = out.split()[-1]
    code, out, err = run_main(["compress", "--run-id", pruned_id, "--bits", "5", "--samples", "150",
                               "--out", str(tmp_path / "g.glz"), "--no-progress"])
    assert code == 0, err
    run = MlflowClient(uri).get_run(out.split()[-1])
    m = run.data.metrics
    assert run.data.tags["ganlab.kind"] == "compress" and run.data.params["bits"] == "5"
    assert m["file_bytes"] == os.path.getsize(tmp_path / "g.glz")
    assert m["compression_ratio"] == pytest.approx(m["dense_bytes"] / m["file_bytes"]) and m["compression_ratio"] > 10
    assert 0.5 < m["ssim_mean"] <= 1 and {"fcd", "kid", "coverage"} <= set(m)
    local = MlflowClient(uri).download_artifacts(run.info.run_id, "model/generator.glz", str(tmp_path / "dl"))
    assert Path(local).read_bytes() == (tmp_path / "g.glz").read_bytes()
    for args in (["--model", str(tmp_path / "g.glz")], ["--run-id", run.info.run_id], ["--run-id", pruned_id]):
        code, _, err = run_main(["generate", *args, "--n", "16", "--out", str(tmp_path / "grid.png")])
        assert code == 0, err
        from PIL import Image

        assert Image.open(tmp_path / "grid.png").size == (2 + 8 * 34, 2 + 2 * 34)  # 16 images of 32 px, 8 a row
    # ONNX, from the pruned run and from the compressed file: onnxruntime computes what torch does
    from ganlab.runs.source import state_from_source

    for args, reference in ((["--run-id", pruned_id], state_from_source(pruned_id, tmp_path / "s", "cpu").generator),
                            (["--model", str(tmp_path / "g.glz")], read_generator(tmp_path / "g.glz")[0])):
        code, _, err = run_main(["export", *args, "--format", "onnx", "--out", str(tmp_path / "g.onnx")])
        assert code == 0, err
        z = np.random.default_rng(0).standard_normal((5, 100, 1, 1)).astype(np.float32)
        (onnx_out,) = ort.InferenceSession(str(tmp_path / "g.onnx")).run(None, {"noise": z})
        with torch.no_grad():
            torch_out = reference.eval()(torch.from_numpy(z)).numpy()
        assert onnx_out.shape == (5, 1, 32, 32)
        np.testing.assert_allclose(onnx_out, torch_out, atol=1e-5)  # stated tolerance: float32 rounding


@pytest.mark.parametrize("args, needle", [
    (["prune", "--method", "channel", "--ratio", "1"], "ratio=1.0 is out of range"),
    (["prune", "--method", "channel", "--ratio", "-0.1"], "ratio=-0.1 is out of range"),
    (["prune", "--method", "channel", "--q", "20"], "method=channel takes ratio"),
    (["compress", "--bits", "0"], "bits=0 is out of range"),
    (["compress", "--bits", "17"], "bits=17 is out of range"),
    (["compress", "--scheme", "huffman"], "scheme='huffman'"),
    (["export", "--format", "tflite"], "format='tflite'"),
    (["generate", "--n", "0", "--out", "x.png"], "n=0 is out of range"),
])
def test_bad_compression_input_exits_2_and_leaves_nothing(trained, tmp_path, args, needle):
    uri, source = trained
    before = len(all_runs(uri))
    files_before = set(os.listdir("."))
    code, _, err = run_main([*args, "--run-id", source])
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert len(all_runs(uri)) == before and set(os.listdir(".")) == files_before


def test_compress_of_a_run_without_a_generator_checkpoint_exits_2(trained, evaluator_32, tmp_path):
    uri, source = trained
    code, out, _ = run_main(["evaluate", "--run-id", source, "--samples", "150", "--no-progress"])
    before = len(all_runs(uri))
    code, _, err = run_main(["compress", "--run-id", out.split()[-1], "--out", str(tmp_path / "g.glz")])
    assert code == 2 and "has no artifact" in err and len(err.strip().splitlines()) == 1
    assert len(all_runs(uri)) == before and not (tmp_path / "g.glz").exists()
