"""Datasets as whole uint8 tensors, loaded through torchvision's dataset classes.

Training draws batches by indexing one (N, C, H, W) uint8 tensor that lives on the training
device, instead of a DataLoader that decodes and transforms image by image:
benchmarks/train_throughput.py measures the difference.

Where data is looked for, in order:
- Fashion-MNIST: ``--data-dir`` / ``GANLAB_DATA_DIR`` (torchvision layout), then Debian's
  ``dataset-fashion-mnist`` files in /usr/share/datasets/fashion-mnist, then torchvision's download.
- CIFAR-10: ``<data-dir>/cifar-10-batches-py``, then torchvision's download.
``GANLAB_OFFLINE=1`` forbids the download step (tests set it: nothing downloads during tests).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ganlab.config import DATASET_CHANNELS, check_choice
from ganlab.errors import DataError, DataNotFoundError
from ganlab.files import write_atomic

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
               "test_batch", "batches.meta")


@dataclass
class ImageSet:
    """A dataset split held in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    split: str = "train"
    subset_seed: int | None = None  # the seed that drew a ``limit`` subset; None: the whole split
    _digest: str | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def digest(self) -> str:
        """16 hex digits of SHA-256 over these exact images and labels (computed once, kept when pickled)."""
        if self._digest is None:
            h = hashlib.sha256()
            h.update(self.images.contiguous().numpy().tobytes())
            h.update(self.labels.contiguous().numpy().tobytes())
            self._digest = h.hexdigest()[:16]
        return self._digest

    def describe(self) -> dict:
        """What MLflow's dataset input records: name, digest, source and profile (see RunLogger.log_dataset)."""
        n, c, height, width = self.images.shape
        return {"name": f"{self.name}-{self.split}-{height}px" + (f"-{n}" if self.subset_seed is not None else ""),
                "digest": self.digest,
                "source": {"dataset": self.name, "split": self.split, "loader": "torchvision"},
                "profile": {"split": self.split, "image_size": height, "channels": c, "num_images": n,
                            "subset": "whole split" if self.subset_seed is None
                            else f"{n} drawn with seed {self.subset_seed}"}}


def default_data_dir() -> Path:
    return Path(os.environ.get("GANLAB_DATA_DIR") or Path.home() / ".cache" / "ganlab" / "data")


def offline() -> bool:
    return os.environ.get("GANLAB_OFFLINE", "").lower() in ("1", "true", "yes")


# CIFAR-10's batch files are pickles, and unpickling runs code: a file is read only when its md5 is
# the one torchvision publishes for it, or one added here (the test suite adds its fixture's).
TRUSTED_CIFAR10_MD5: set[str] = set()


@functools.cache
def _local_cifar10_class():
    """The reader class, made on first use: torchvision is imported only where data is read (its import
    pulls in torch._dynamo, a second of every sweep trial's start, and trials get their images by reference).
    """
    import torchvision

    class LocalCIFAR10(torchvision.datasets.CIFAR10):
        """torchvision's CIFAR10 reader for a local ``cifar-10-batches-py`` directory.

        Every file is checked against torchvision's md5 (or TRUSTED_CIFAR10_MD5) before it is
        unpickled; a file that fails is refused with a one-line error. Reading and decoding are
        torchvision's.
        """

        def _check_integrity(self) -> bool:
            base = Path(self.root, self.base_folder)
            files = [*self.train_list, *self.test_list, [self.meta["filename"], self.meta["md5"]]]
            for name, official in files:
                digest = hashlib.md5((base / name).read_bytes()).hexdigest()
                if digest != official and digest not in TRUSTED_CIFAR10_MD5:
                    raise DataError(f"cifar10 file {base / name} is not CIFAR-10's (md5 {digest}); it is refused "
                                    "because loading it would unpickle it, and a planted pickle runs code")
            return True

        def _load_meta(self) -> None:  # _check_integrity (run first, by __init__) has checked it
            import pickle

            with open(Path(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return LocalCIFAR10


def torchvision_dataset(name: str, *, train: bool = True, data_dir: str | Path | None = None,
                        transform=None) -> torch.utils.data.Dataset:
    """The torchvision dataset object for ``name``, found as the module docstring says.

    Raises DataNotFoundError (one line: where it looked, how to get the data) when it is absent
    and cannot be downloaded.
    """
    check_choice("dataset", name, tuple(DATASET_CHANNELS))
    root = Path(data_dir) if data_dir else default_data_dir()
    if root.exists() and not root.is_dir():
        raise DataError(f"data directory {root} is a file; give a folder (--data-dir or GANLAB_DATA_DIR)")
    if name == "fashion-mnist":
        return _fashion_mnist(root, train, transform)
    return _cifar10(root, train, transform)


def _fashion_mnist(root: Path, train: bool, transform):
    import torchvision

    raw = root / "FashionMNIST" / "raw"
    system = Path(os.environ.get("GANLAB_FASHION_MNIST_SYSTEM_DIR", DEBIAN_FASHION_MNIST))
    if not all((raw / f).is_file() for f in FASHION_FILES):
        if all((system / f"{f}.gz").is_file() for f in FASHION_FILES):
            _gunzip_into(system, raw)
        elif not offline():
            try:
                return torchvision.datasets.FashionMNIST(root, train=train, transform=transform,
                                                         download=True)
            except Exception as exc:  # any network / archive failure means: not available
                raise _missing("fashion-mnist", [raw, system], exc) from None
        else:
            raise _missing("fashion-mnist", [raw, system], None)
    try:
        return torchvision.datasets.FashionMNIST(root, train=train, transform=transform, download=False)
    except (RuntimeError, ValueError, EOFError, OSError, AssertionError) as exc:  # torchvision's reader on a
        # damaged file (it asserts on an idx header's magic number)
        detail = str(exc)[:120] or f"{type(exc).__name__}: not idx files"
        raise DataError(f"fashion-mnist files in {raw} are corrupt or truncated ({detail}); delete "
                        "them and they are unpacked again from Debian's copy (or downloaded)") from None


def _gunzip_into(src: Path, dst: Path) -> None:
    # Debian ships the idx files gzip'd (their .gz checksums differ from torchvision's list, the
    # content is the same); torchvision reads the uncompressed files from <root>/FashionMNIST/raw.
    dst.mkdir(parents=True, exist_ok=True)
    for f in FASHION_FILES:
        with gzip.open(src / f"{f}.gz", "rb") as fin:
            write_atomic(lambda out, fin=fin: shutil.copyfileobj(fin, out), dst / f)


def _cifar10(root: Path, train: bool, transform):
    local = root / "cifar-10-batches-py"
    if all((local / f).is_file() for f in CIFAR_FILES):
        return _local_cifar10_class()(root, train=train, transform=transform, download=False)
    if offline():
        raise _missing("cifar10", [local], None)
    import torchvision

    try:
        return torchvision.datasets.CIFAR10(root, train=train, transform=transform, download=True)
    except Exception as exc:
        raise _missing("cifar10", [local], exc) from None


DOWNLOAD_URLS = {"fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                 "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"}  # torchvision's


def _reason(exc: Exception) -> str:
    """The innermost reason of a failed download, in a few words (URLError's reason, an OSError's strerror)."""
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(reason).split())[:160]


def _missing(name: str, looked: list[Path], exc: Exception | None) -> DataNotFoundError:
    where = ", ".join(str(p) for p in looked)
    local = {"fashion-mnist": "run `apt-get install dataset-fashion-mnist`, or put torchvision's FashionMNIST/raw "
             "files under --data-dir", "cifar10": "put an extracted cifar-10-batches-py under --data-dir"}[name]
    if exc is None:  # downloads are off: allowing them is one way
        why, how = "downloads are off (GANLAB_OFFLINE=1)", f"{local}, or unset GANLAB_OFFLINE to download it"
    else:  # the download was tried and failed: advising it again would not help
        why = f"the download from {DOWNLOAD_URLS[name]} failed: {type(exc).__name__}: {_reason(exc)}"
        how = f"{local} (on a machine without network, copy the files there)"
    return DataNotFoundError(f"{name} not found (looked in {where}; {why}): {how}")


def load_images(name: str, image_size: int, *, train: bool = True, limit: int | None = None,
                data_dir: str | Path | None = None, subset_seed: int = 0) -> ImageSet:
    """Load a split as uint8 (N, C, image_size, image_size) plus labels.

    ``limit`` keeps a fixed random subset (the same for the same ``subset_seed``) so a small run
    still sees every class.
    """
    ds = torchvision_dataset(name, train=train, data_dir=data_dir)
    images = torch.as_tensor(ds.data)
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    if images.ndim == 3:  # Fashion-MNIST: (N, 28, 28)
        images = images.unsqueeze(1)
    else:  # CIFAR-10: (N, 32, 32, 3) numpy HWC
        images = images.permute(0, 3, 1, 2)
    subset = limit is not None and limit < len(labels)
    if subset:
        keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(subset_seed))[:limit]
        images, labels = images[keep], labels[keep]
    return ImageSet(name, resize_uint8(images.contiguous(), image_size), labels, split="train" if train else "test",
                    subset_seed=subset_seed if subset else None)


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 8192) -> torch.Tensor:
    """Bilinear, antialiased resize of uint8 (N, C, H, W) to (N, C, size, size), in chunks."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    from torchvision.transforms.v2 import functional as TF

    out = [TF.resize(images[i:i + chunk], [size, size], antialias=True)
           for i in range(0, images.shape[0], chunk)]
    return torch.cat(out)


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the generator's output range."""
    return images_uint8.float().div_(127.5).sub_(1.0)


class TensorBatcher:
    """Shuffled mini-batches drawn from a whole-dataset uint8 tensor kept on ``device``.

    The order of epoch ``e`` depends only on (seed, e), so a resumed run sees the same batches.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, device: torch.device, seed: int):
        self.images = images.to(device)
        self.batch_size = batch_size
        self.seed = seed

    def __len__(self) -> int:
        return -(-self.images.shape[0] // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.images.shape[0], generator=g).to(self.images.device)
        for start in range(0, order.numel(), self.batch_size):
            yield to_model_range(self.images[order[start:start + self.batch_size]])
