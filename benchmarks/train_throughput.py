"""Images/s of ganlab's training step vs a reference loop written like pytorch/examples dcgan.

Both train the same model (same size, batch, optimizer, loss) for the same number of images in
one run on this machine. The reference reads images through torchvision's per-image transforms in
a DataLoader and calls .item() every step for its stats, as the canonical example does; ganlab
indexes one uint8 tensor held on the device and syncs only every 25 steps.

    python benchmarks/train_throughput.py [--image-size 32] [--images 4096] [--device auto]
        [--amp/--no-amp] [--channels-last/--no-channels-last] [--compile] [--threads N] [--load idle|busy|both]
        [--shared 4]
prints both rates and the ratio ganlab / reference (goal: >= 1.0 on the CPU; >= 2.0 on a GPU, where
amp and channels_last default on, with --compile); with --shared N, the aggregate images/s of N trainings
sharing the device at once against one alone (goal on a GPU: 4 shared >= 2.5x one).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torchvision.transforms as T
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_arguments, loads, machine_line, neighbour, set_threads  # noqa: E402

from ganlab.config import TrainConfig  # noqa: E402
from ganlab.device import pick_device  # noqa: E402
from ganlab.gan.data import TensorBatcher, load_images, torchvision_dataset  # noqa: E402
from ganlab.gan.loop import create_state, for_device, train_gan
from ganlab.gan.models import build_models  # noqa: E402


def reference_loop(cfg: TrainConfig, n_images: int, device: torch.device, workers: int) -> float:
    """pytorch/examples dcgan/main.py's loop, trimmed to n_images; returns images/s."""
    dataset = torchvision_dataset(cfg.dataset, train=True, transform=T.Compose([
        T.Resize(cfg.image_size), T.CenterCrop(cfg.image_size), T.ToTensor(),
        T.Normalize((0.5,) * cfg.nc, (0.5,) * cfg.nc)]))
    dataset = torch.utils.data.Subset(dataset, range(n_images))
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=workers)
    torch.manual_seed(cfg.seed)
    net_g, net_d = (m.to(device) for m in build_models(cfg))
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, 0.999))
    seen = 0
    start = time.perf_counter()
    for data, _ in loader:
        real = data.to(device)
        b = real.size(0)
        net_d.zero_grad()
        output = net_d(real)
        err_real = criterion(output, torch.full((b,), 1.0, device=device))
        err_real.backward()
        d_x = output.mean().item()
        fake = net_g(torch.randn(b, cfg.nz, 1, 1, device=device))
        output = net_d(fake.detach())
        err_fake = criterion(output, torch.full((b,), 0.0, device=device))
        err_fake.backward()
        d_g_z1 = output.mean().item()
        err_d = err_real + err_fake
        opt_d.step()
        net_g.zero_grad()
        output = net_d(fake)
        err_g = criterion(output, torch.full((b,), 1.0, device=device))
        err_g.backward()
        d_g_z2 = output.mean().item()
        opt_g.step()
        _ = (err_d.item(), err_g.item(), d_x, d_g_z1, d_g_z2)
        seen += b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def ganlab_loop(cfg: TrainConfig, n_images: int, device: torch.device) -> float:
    """ganlab's train_gan for one epoch over n_images, data loading included; returns images/s."""
    start = time.perf_counter()
    images = load_images(cfg.dataset, cfg.image_size, limit=n_images).images
    state = create_state(cfg, device)
    batcher = TensorBatcher(images, cfg.batch_size, device, cfg.seed)
    for _ in train_gan(state, batcher, 1, progress=False):
        pass
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n_images / (time.perf_counter() - start)


def _shared_worker(cfg: TrainConfig, n_images: int, device_name: str, share: float, threads: int, barrier, out) -> None:
    """One of N trials sharing the device: its share of the GPU's memory (or of the cores), then one timed epoch."""
    from ganlab.device import limit_gpu_memory

    set_threads(threads)
    device = pick_device(device_name)
    if device.type == "cuda":
        limit_gpu_memory(share)
    images = load_images(cfg.dataset, cfg.image_size, limit=n_images).images
    state = create_state(cfg, device)
    warm = TensorBatcher(images[:cfg.batch_size * 2], cfg.batch_size, device, cfg.seed)
    for _ in train_gan(state, warm, 1, progress=False):  # kernels chosen, memory allocated: not timed
        pass
    batcher = TensorBatcher(images, cfg.batch_size, device, cfg.seed)
    barrier.wait()
    start = time.time()
    for _ in train_gan(state, batcher, 2, progress=False):
        pass
    if device.type == "cuda":
        torch.cuda.synchronize()
    out.put((start, time.time(), 2 * n_images))


def shared_throughput(cfg: TrainConfig, n_images: int, device_name: str, trials: int, threads: int) -> float:
    """Aggregate images/s of ``trials`` trainings running at once on one device, each a process of its own as a
    fractional-GPU trial is (memory share 1/trials on CUDA; the cores split between them on a CPU)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(trials), ctx.Queue()
    procs = [ctx.Process(target=_shared_worker, args=(cfg, n_images, device_name, 1.0 / trials,
                                                      max(1, threads // trials), barrier, out)) for _ in range(trials)]
    for proc in procs:
        proc.start()
    spans = [out.get(timeout=1800) for _ in procs]
    for proc in procs:
        proc.join()
    return sum(n for _, _, n in spans) / (max(end for _, end, _ in spans) - min(start for start, _, _ in spans))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--images", type=int, default=4096)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference (the example's default)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--shared", type=int, default=0, metavar="N",
                   help="also: aggregate images/s of N trainings sharing the device at once (processes, as N "
                   "fractional-GPU trials) against one alone (default: 0, skip; the issue's figure is 4)")
    for flag in ("amp", "channels-last", "compile"):
        p.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None,
                       help="ganlab's setting (default: its own, decided by the device)")
    add_common_arguments(p)
    args = p.parse_args()
    device = pick_device(args.device)
    cfg = TrainConfig(dataset=args.dataset, image_size=args.image_size, amp=args.amp,
                      channels_last=args.channels_last, compile=bool(args.compile)).resolved()
    cfg = for_device(cfg, device)
    load_images(cfg.dataset, cfg.image_size, limit=16)  # warm the dataset files and import paths
    for load in loads(args.load):
        with neighbour(load):
            threads = set_threads(args.threads)  # ganlab's default decides with the neighbour running
            ours, ref = [], []
            for _ in range(args.repeats):  # interleaved, best of N: less sensitive to the machine's other load
                ref.append(reference_loop(cfg, args.images, device, args.workers))
                ours.append(ganlab_loop(cfg, args.images, device))
        print(machine_line(threads, load))
        print(f"device {device}; {cfg.dataset} {cfg.image_size}px, batch {cfg.batch_size}, {args.images} images x "
              f"{args.repeats}; ganlab amp={cfg.amp} channels_last={cfg.channels_last} compile={cfg.compile}")
        print(f"reference (DataLoader + per-image transforms): {max(ref):8.1f} images/s")
        print(f"ganlab (uint8 tensor on device):               {max(ours):8.1f} images/s")
        print(f"ratio ganlab / reference: {max(ours) / max(ref):.2f}\n")
    if args.shared > 1:  # once, on the machine as it is without a neighbour; data loading and warm-up not timed
        threads = set_threads(args.threads)
        one = shared_throughput(cfg, args.images, args.device, 1, threads)
        many = shared_throughput(cfg, args.images, args.device, args.shared, threads)
        print(machine_line(threads, "idle"))
        print(f"trials sharing the device, each its own process ({threads} thread(s) split between them on a CPU, "
              f"1/{args.shared} of the memory each on a GPU), 2 epochs of {args.images} images timed after warm-up:")
        print(f"1 trial alone on the device:         {one:8.1f} images/s")
        print(f"{args.shared} trials sharing it (aggregate):  {many:8.1f} images/s")
        print(f"ratio {args.shared} shared / 1: {many / one:.2f}\n")


if __name__ == "__main__":
    main()
