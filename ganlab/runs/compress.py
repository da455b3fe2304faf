"""``ganlab compress``, ``ganlab generate`` and ``ganlab export``: a generator to ship, and what it costs.

compress: a run's (pruned) generator -> one Deep-Compression file (ganlab.pruning.compress), logged as a
run (ganlab.kind=compress) with its size against the dense fp32 generator and the quality of the
decompressed generator against the uncompressed one. generate: images from such a file or a run's
checkpoint. export: the generator as ONNX, checked in onnxruntime by the tests.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ganlab.config import MAX_SAMPLES, MAX_SEED, MIN_EVAL_SAMPLES, check_choice, check_range
from ganlab.errors import ConfigError
from ganlab.files import check_output_file, write_atomic
from ganlab.gan.images import to_pil_grid
from ganlab.gan.models import Generator, evaluation_noise, generate
from ganlab.metrics.distribution import Evaluator
from ganlab.metrics.pairwise import quality_metrics
from ganlab.pruning.compress import check_settings, compress_generator, read_generator
from ganlab.pruning.magnitude import dense_size_bytes
from ganlab.runs.source import opened_source, state_from_source
from ganlab.tracking import schema
from ganlab.tracking.store import RunContext, RunResult, download_artifact, ganlab_run, get_run

EXPORT_FORMATS = ("onnx",)


@dataclass(frozen=True)
class CompressSettings:
    """How ``ganlab compress`` stores a generator and checks it; checked at birth (ConfigError, exit 2)."""

    bits: int = 5  # bits per weight code (k-means: 2**bits shared values per layer)
    scheme: str = "kmeans"  # kmeans | linear
    samples: int = 1000  # images per quality comparison

    def __post_init__(self) -> None:
        check_settings(self.bits, self.scheme)
        check_range("samples", self.samples, low=MIN_EVAL_SAMPLES, high=MAX_SAMPLES, integer=True)


def compress_run(source: str, settings: CompressSettings = CompressSettings(), ctx: RunContext | None = None, *,
                 out: str | None = None, device: str = "auto", evaluator: Evaluator | None = None) -> RunResult:
    """Compress the generator of ``source`` (run id or checkpoint) into one file; log it as a compress run."""
    ctx = ctx or RunContext.here()
    bits, scheme, samples = settings.bits, settings.scheme, settings.samples
    if out is not None:
        check_output_file(out)  # now, not after the work (an existing folder left a FAILED run)
    with opened_source(source, ctx, device=device, evaluator=evaluator, what="compress") as src:
        cfg, g = src.state.config, src.state.generator.cpu().eval()
        data, _ = compress_generator(g, cfg, bits, scheme)
        path = write_atomic(data, src.workdir / Path(schema.COMPRESSED).name)
        decompressed, _ = read_generator(path)  # what a user of the file gets, read back from disk
        noise = evaluation_noise(samples, cfg.nz, cfg.seed)
        before, after = generate(g, noise), generate(decompressed, noise)
        dense = Generator(cfg.nz, cfg.ngf, cfg.nc, cfg.image_size)  # the unpruned fp32 generator of this config
        metrics = {"file_bytes": float(os.path.getsize(path)), "dense_bytes": float(dense_size_bytes(dense))}
        metrics["compression_ratio"] = metrics["dense_bytes"] / metrics["file_bytes"]
        metrics.update(quality_metrics(before, after))
        metrics.update(src.evaluator.evaluate_images(after))
        params = {"bits": bits, "scheme": scheme, "samples": samples, "dataset": cfg.dataset,
                  "image_size": cfg.image_size}
        with ganlab_run("compress", ctx, params=params, tags=src.tags,
                        run_name=f"compress-{scheme}-{bits}bit") as logger:
            logger.log_metrics(metrics)
            logger.log_file(path, str(Path(schema.COMPRESSED).parent))
            logger.log_image(to_pil_grid(after[:64]), schema.DECOMPRESSED)
            if out:
                write_atomic(path.read_bytes(), out)
            return RunResult(logger.run_id, metrics)


def load_generator(*, model: str | None = None, run_id: str | None = None, uri: str | None = None,
                   workdir: Path) -> tuple[Generator, int]:
    """(generator in eval mode on the CPU, its run seed) from a compressed file, or a run's compressed
    file or checkpoint."""
    if model:
        generator, cfg = read_generator(model)
        return generator, cfg.seed
    run = get_run(run_id, uri)
    if run.data.tags.get(schema.KIND) == "compress":
        generator, cfg = read_generator(download_artifact(run_id, schema.COMPRESSED, workdir, uri))
        return generator, cfg.seed
    state = state_from_source(run_id, workdir, "cpu", uri, with_optimizers=False)
    return state.generator.eval(), state.config.seed


def generate_grid(*, n: int, out: str, model: str | None = None, run_id: str | None = None,
                  seed: int | None = None, uri: str | None = None) -> Path:
    """Write a grid of ``n`` generated images to PNG ``out`` (temp file, then rename)."""
    check_range("n", n, low=1, high=10_000, integer=True)
    if not out.lower().endswith(".png"):
        raise ConfigError(f"--out {out} must be a .png file")
    check_output_file(out)
    if seed is not None:
        check_range("seed", seed, low=0, high=MAX_SEED, integer=True)
    with tempfile.TemporaryDirectory(prefix="ganlab-generate-") as tmp:
        generator, run_seed = load_generator(model=model, run_id=run_id, uri=uri, workdir=Path(tmp))
        noise = evaluation_noise(n, generator.nz, run_seed if seed is None else seed)
        image = to_pil_grid(generate(generator, noise))
        staged = Path(tmp) / "grid.png"
        image.save(staged)
        return write_atomic(staged.read_bytes(), out)


def export_generator(*, run_id: str | None = None, model: str | None = None, fmt: str = "onnx",
                     out: str = "generator.onnx", uri: str | None = None) -> Path:
    """The generator as ONNX (noise (N, nz, 1, 1) float32 in, images (N, nc, H, W) in [-1, 1] out)."""
    check_choice("format", fmt, EXPORT_FORMATS)
    check_output_file(out)
    with tempfile.TemporaryDirectory(prefix="ganlab-export-") as tmp:
        generator, _ = load_generator(model=model, run_id=run_id, uri=uri, workdir=Path(tmp))
        staged = Path(tmp) / "generator.onnx"
        example = torch.zeros(2, generator.nz, 1, 1)
        torch.onnx.export(generator, (example,), str(staged), input_names=["noise"], output_names=["images"],
                          dynamic_axes={"noise": {0: "batch"}, "images": {0: "batch"}}, dynamo=False)
        return write_atomic(staged.read_bytes(), out)
