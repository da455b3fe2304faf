"""What pruning buys, measured in one run on this machine: channel pruning's MAC reduction against its
latency speed-up (PyTorch eager and onnxruntime), and the Deep-Compression file's size.

    python benchmarks/compression.py [--image-size 64] [--ngf 64] [--batch 64] [--threads N] [--load idle|busy|both]

For channel ratios 0.25/0.5/0.75 it prints MAC reduction (dense MACs / pruned MACs), the measured
speed-up of generating a batch (dense ms / pruned ms, median of timed batches after warm-up) in eager
PyTorch and in onnxruntime, and their ratio (speed-up / MAC reduction; the goal is >= 0.7). For
percentage pruning q = 80/90 it prints the compressed file's bytes and its compression ratio
against the dense fp32 generator at 5-bit k-means sharing. Weights: a DCGAN-initialised generator
(latency and MACs do not depend on the values), or a trained one with --checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_arguments, loads, machine_line, neighbour, set_threads  # noqa: E402

from ganlab.config import TrainConfig  # noqa: E402
from ganlab.gan.models import Generator, weights_init  # noqa: E402
from ganlab.pruning.channel import channel_prune, costs, generator_latency_ms  # noqa: E402
from ganlab.pruning.compress import compress_generator  # noqa: E402
from ganlab.pruning.magnitude import dense_size_bytes, make_permanent, percentage_prune  # noqa: E402


def ort_latency_ms(generator: Generator, batch: int, threads: int, repeats: int = 10, warmup: int = 3) -> float:
    """Median ms of one batch in onnxruntime (CPU, ``threads`` intra-op threads) of the exported generator."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.onnx"
        torch.onnx.export(generator.eval(), (torch.zeros(1, generator.nz, 1, 1),), str(path), input_names=["noise"],
                          output_names=["images"], dynamic_axes={"noise": {0: "batch"}}, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    noise = np.random.default_rng(0).standard_normal((batch, generator.nz, 1, 1)).astype(np.float32)
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        session.run(None, {"noise": noise})
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def channel_rows(dense: Generator, ratios, batch: int, threads: int) -> list[dict]:
    base = costs(dense)
    base_eager = generator_latency_ms(dense, batch)
    base_ort = ort_latency_ms(dense, batch, threads)
    rows = []
    for ratio in ratios:
        g = channel_prune(copy.deepcopy(dense), ratio).eval()
        c = costs(g)
        mac_reduction = base["macs"] / c["macs"]
        eager = base_eager / generator_latency_ms(g, batch)
        ort_speedup = base_ort / ort_latency_ms(g, batch, threads)
        rows.append({"ratio": ratio, "params": c["params"], "mac_reduction": mac_reduction, "eager_speedup": eager,
                     "eager_efficiency": eager / mac_reduction, "ort_speedup": ort_speedup,
                     "ort_efficiency": ort_speedup / mac_reduction})
    print(f"dense generator: {base['params'] / 1e6:.2f} M params, {base['macs'] / 1e6:.1f} M MACs per image, "
          f"batch of {batch}: {base_eager:.1f} ms eager, {base_ort:.1f} ms onnxruntime")
    return rows


def compression_rows(dense: Generator, cfg: TrainConfig, qs, bits: int) -> list[dict]:
    rows = []
    dense_bytes = dense_size_bytes(dense)
    for q in qs:
        g = make_permanent(percentage_prune(copy.deepcopy(dense), q))
        data, _ = compress_generator(g, cfg, bits, "kmeans")
        rows.append({"q": q, "bits": bits, "file_bytes": len(data), "dense_bytes": dense_bytes,
                     "ratio": dense_bytes / len(data)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--image-size", type=int, default=64, choices=(32, 64))
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "cifar10"),
                   help="sets the image channels (1 or 3)")
    p.add_argument("--batch", type=int, default=64, help="images per timed batch")
    p.add_argument("--bits", type=int, default=5, help="weight-sharing bits of the compressed file")
    p.add_argument("--checkpoint", help="a ganlab checkpoint whose generator to use (default: DCGAN init)")
    add_common_arguments(p)
    args = p.parse_args()
    if args.checkpoint:
        from ganlab.gan.checkpoint import load_checkpoint
        from ganlab.gan.models import build_models

        ckpt = load_checkpoint(args.checkpoint)
        cfg = ckpt["config"]
        dense, _ = build_models(cfg, ckpt.get("widths"))
        dense.load_state_dict(ckpt["generator"])
    else:
        cfg = TrainConfig(dataset=args.dataset, image_size=args.image_size, ngf=args.ngf).resolved()
        torch.manual_seed(0)
        dense = Generator(cfg.nz, cfg.ngf, cfg.nc, cfg.image_size)
        dense.apply(weights_init)
    dense.eval()
    for load in loads(args.load):
        with neighbour(load):
            threads = set_threads(args.threads)  # ganlab's default decides with the neighbour running
            print(machine_line(threads, load))
            print(f"generator: {cfg.image_size} px, ngf {cfg.ngf}, nc {cfg.nc}, widths {dense.widths}")
            rows = channel_rows(dense, (0.25, 0.5, 0.75), args.batch, threads)
        print("channel ratio | params    | MAC reduction | eager speed-up (÷MACs) | onnxruntime speed-up (÷MACs)")
        for r in rows:
            print(f"{r['ratio']:>13g} | {r['params'] / 1e6:7.3f} M | {r['mac_reduction']:12.2f}x | "
                  f"{r['eager_speedup']:7.2f}x ({r['eager_efficiency']:.2f})       | "
                  f"{r['ort_speedup']:7.2f}x ({r['ort_efficiency']:.2f})")
        print()
    for r in compression_rows(dense, cfg, (80, 90), args.bits):
        print(f"percentage q={r['q']}, {r['bits']}-bit k-means + Huffman: {r['file_bytes']:,} bytes "
              f"(dense fp32 {r['dense_bytes']:,}): compression ratio {r['ratio']:.1f}x")


if __name__ == "__main__":
    main()
