"""Distribution quality in a classifier's feature space: FCD, KID, class coverage, class KL.

The seed could not compute FID for grayscale images: Inception expects RGB ImageNet-like input.
We train a small classifier once per dataset and image size (cached on disk) and measure
- ``fcd``: Fréchet distance between generated and held-out real images in its 128-d features
  (torchmetrics' FrechetInceptionDistance with this classifier as the feature extractor),
- ``kid``: kernel inception distance in the same features (torchmetrics),
- ``coverage``: how many of the 10 classes the generated images hit (a class is hit when at
  least COVERAGE_MIN_SHARE of the samples are predicted as it) — the mode-collapse signal,
- ``class_kl``: KL divergence of the predicted-class histogram from uniform (0 = balanced).
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ganlab.config import CLASSIFIER_FEATURES, DATASET_CHANNELS
from ganlab.errors import GanlabError, ModelFailure
from ganlab.gan.checkpoint import save_atomic
from ganlab.gan.data import load_images, to_model_range
from ganlab.gan.models import evaluation_noise, generate

NUM_CLASSES = 10
COVERAGE_MIN_SHARE = 0.02  # a fifth of the 10 % a class gets under a uniform generator
CLASSIFIER_FORMAT = 2


def cache_dir() -> Path:
    return Path(os.environ.get("GANLAB_CACHE_DIR") or Path.home() / ".cache" / "ganlab")


class Classifier(nn.Module):
    """A small CNN for 32/64 px images in [-1, 1]; ``features`` is its 128-d penultimate layer."""

    num_features = CLASSIFIER_FEATURES  # read by torchmetrics instead of probing with a dummy 299x299 image

    def __init__(self, nc: int):
        super().__init__()
        self.body = nn.Sequential(
            # 64 px input is average-pooled to 32 px first: the classifier costs the same at both sizes
            nn.AdaptiveAvgPool2d(32),
            nn.Conv2d(nc, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(True),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(64 * 16, self.num_features), nn.ReLU(True),
        )
        self.head = nn.Linear(self.num_features, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class _Precomputed(nn.Module):
    """The "feature extractor" torchmetrics is given: features are extracted before, once per image."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def classifier_path(dataset: str, image_size: int) -> Path:
    return cache_dir() / "classifiers" / f"{dataset}-{image_size}px-v{CLASSIFIER_FORMAT}.pt"


def train_classifier(dataset: str, image_size: int, *, data_dir=None, epochs: int = 3,
                     progress: bool = True, seed: int = 0) -> tuple[Classifier, float]:
    """Train the scoring classifier on the train split; returns it and its test accuracy."""
    train = load_images(dataset, image_size, train=True, data_dir=data_dir)
    test = load_images(dataset, image_size, train=False, data_dir=data_dir)
    torch.manual_seed(seed)
    model = Classifier(DATASET_CHANNELS[dataset])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * -(-len(train) // 256))
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(train), generator=g)
        bar = tqdm(range(0, len(order), 256), desc=f"classifier {dataset} {image_size}px epoch {epoch + 1}/{epochs}",
                   disable=None if progress else True, leave=False)
        for start in bar:
            idx = order[start:start + 256]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(to_model_range(train.images[idx])), train.labels[idx])
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(to_model_range(test.images[i:i + 1000])).argmax(1) for i in range(0, len(test), 1000)])
    return model, float((pred == test.labels).float().mean())


def load_or_train_classifier(dataset: str, image_size: int, *, data_dir=None,
                             progress: bool = True) -> tuple[Classifier, float]:
    """The cached classifier for (dataset, image_size), trained and cached on first use."""
    path = classifier_path(dataset, image_size)
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = Classifier(DATASET_CHANNELS[dataset])
        model.load_state_dict(blob["state_dict"])
        return model.eval(), float(blob["test_accuracy"])
    print(f"ganlab: training the {dataset} {image_size}px scoring classifier once "
          f"(cached at {path})", file=sys.stderr)
    model, acc = train_classifier(dataset, image_size, data_dir=data_dir, progress=progress)
    save_atomic({"state_dict": model.state_dict(), "test_accuracy": acc, "dataset": dataset,
                 "image_size": image_size}, path)
    return model, acc


@dataclass
class Evaluator:
    """Scores generated images against held-out real ones. Picklable: Ray passes it by reference.

    The real images' features are extracted once per evaluator (on first use) and kept; each
    generated image goes through the classifier once for FCD, KID and the class statistics.
    """

    dataset: str
    classifier: Classifier
    real_images: torch.Tensor  # uint8, held-out test split
    test_accuracy: float
    _real_features: torch.Tensor | None = None
    _real_moments: tuple | None = None  # (the features they are of, mean, covariance trace, its square root)

    @classmethod
    def for_dataset(cls, dataset: str, image_size: int, *, data_dir=None, real_samples: int = 2000,
                    progress: bool = True) -> Evaluator:
        classifier, acc = load_or_train_classifier(dataset, image_size, data_dir=data_dir, progress=progress)
        real = load_images(dataset, image_size, train=False, limit=real_samples, data_dir=data_dir)
        return cls(dataset, classifier, real.images, acc)

    @torch.no_grad()
    def features_and_logits(self, images: torch.Tensor, batch: int = 1000,
                            device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features and class logits of images in [-1, 1], computed on ``device`` (default: where
        the images are, so a generator's images on the GPU are scored there), returned on the CPU in float32."""
        device = torch.device(device) if device is not None else images.device
        model = self.classifier.to(device).eval()
        feats = torch.cat([model.features(images[i:i + batch].to(device).float())
                           for i in range(0, len(images), batch)])
        return feats.cpu(), model.head(feats).cpu()

    def ready(self) -> Evaluator:
        """Extract the real images' features now, so they travel with the evaluator when it is pickled: Ray
        hands every trial its own copy, and each would otherwise extract them again (0.27 s per trial at 32 px
        on 2 CPU cores, where a 2-epoch trial takes 2.3 s)."""
        self.real_features  # noqa: B018 - computed and kept
        return self

    @property
    def real_features(self) -> torch.Tensor:
        if self._real_features is None:
            device = next(self.classifier.parameters()).device
            self._real_features = self.features_and_logits(to_model_range(self.real_images), device=device)[0]
        return self._real_features

    @torch.no_grad()
    def evaluate_images(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> dict[str, float]:
        """fcd, kid, coverage, class_kl of ``fake`` (float in [-1, 1]) against held-out reals (or ``real``)."""
        if not bool(torch.isfinite(fake).all()):  # FCD's matrix square root would crash inside LAPACK (exit 139)
            bad = int((~torch.isfinite(fake)).flatten(1).any(1).sum())
            raise ModelFailure(f"{bad} of {len(fake)} generated images hold NaN or infinite values (the generator's "
                               "weights diverged); there is nothing to score")
        fid_class, kid_class = metric_classes()
        real_feats = self.real_features if real is None else self.features_and_logits(real, device=fake.device)[0]
        fake_feats, logits = self.features_and_logits(fake.detach())
        extractor = _Precomputed(self.classifier.num_features)
        fid = fid_class(feature=extractor)
        subset = min(1000, len(real_feats), len(fake_feats))
        with warnings.catch_warnings():  # "will save all extracted features in buffer": 2,000 x 128 floats here
            warnings.filterwarnings("ignore", message=".*will save all extracted features", category=UserWarning)
            kid = kid_class(feature=extractor, subset_size=subset, subsets=50)
        for metric in (fid, kid):
            metric.update(real_feats, real=True)
            metric.update(fake_feats, real=False)
        return {"fcd": float(fid.compute()), "fcd_inf": self.fcd_infinity(fake_feats, real_feats),
                "kid": float(kid.compute()[0]), **class_statistics(logits.argmax(1))}

    def fcd_infinity(self, fake_feats: torch.Tensor, real_feats: torch.Tensor | None = None) -> float:
        """FCD∞: FCD without its small-sample bias, Chong & Forsyth's 1/N extrapolation (see ``fcd_infinity``);
        the reals' square-rooted covariance is kept between calls."""
        real = self.real_features if real_feats is None else real_feats
        if self._real_moments is None or self._real_moments[0] is not real:
            self._real_moments = (real, *real_moments(real))
        return fcd_infinity(fake_feats, *self._real_moments[1:])

    def evaluate_generator(self, generator: nn.Module, n: int = 1000, seed: int = 0) -> dict[str, float]:
        """Scores of ``n`` images from ``generator`` on the evaluation noise of run seed ``seed``."""
        device = next(generator.parameters()).device
        noise = evaluation_noise(n, generator.nz, seed)
        return self.evaluate_images(generate(generator, noise.to(device)))  # scored where the generator is


FCD_INF_SIZES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # subset sizes, as fractions of the generated images
FCD_INF_REPEATS = 3  # random subsets per size below the whole set


def real_moments(real: torch.Tensor) -> tuple[np.ndarray, float, np.ndarray]:
    """The reals' mean, covariance trace and covariance square root (float64; unbiased covariance, as torchmetrics)."""
    x = real.double().numpy()
    cov = np.cov(x, rowvar=False)
    vals, vecs = np.linalg.eigh(cov)
    root = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    return x.mean(0), float(np.trace(cov)), root


def frechet(fake: np.ndarray, mean_r: np.ndarray, trace_r: float, root_r: np.ndarray) -> float:
    """Fréchet distance of ``fake``'s Gaussian fit to the reals' (given by their moments): |μr − μf|² + Tr Σr +
    Tr Σf − 2 Tr (Σr^½ Σf Σr^½)^½, the last term from the eigenvalues of a symmetric matrix."""
    cov = np.cov(fake, rowvar=False)
    inner = np.linalg.eigvalsh(root_r @ cov @ root_r)
    root_term = np.sqrt(np.clip(inner, 0, None)).sum()
    return float(((mean_r - fake.mean(0)) ** 2).sum() + trace_r + np.trace(cov) - 2 * root_term)


def fcd_infinity(fake: torch.Tensor, mean_r: np.ndarray, trace_r: float, root_r: np.ndarray, seed: int = 0) -> float:
    """FCD∞ (Chong & Forsyth, "Effectively Unbiased FID and Inception Score and where to find them", CVPR 2020): FCD
    grows linearly in 1/N with the number N of generated images; FCD is computed on random subsets of sizes
    FCD_INF_SIZES × N (FCD_INF_REPEATS subsets each, the whole set once), a line is fitted to FCD against 1/N, and
    its value at 1/N = 0 is FCD∞. Subsets never go below the features' count + 1 (a covariance needs them)."""
    x = fake.double().numpy()
    n = len(x)
    rng = np.random.default_rng(seed)
    sizes, values = [], []
    for fraction in FCD_INF_SIZES:
        size = max(int(round(fraction * n)), min(n, x.shape[1] + 1))
        for _ in range(1 if size >= n else FCD_INF_REPEATS):
            sizes.append(size)
            values.append(frechet(x[rng.choice(n, size, replace=False)] if size < n else x, mean_r, trace_r, root_r))
    if len(set(sizes)) < 2:  # too few images to vary the size: FCD itself
        return float(np.mean(values))
    slope, intercept = np.polyfit(1.0 / np.array(sizes), np.array(values), 1)
    return float(intercept)


def metric_classes() -> tuple[type, type]:
    """torchmetrics' FID and KID, imported on first use: the import takes ~1.9 s on 2 cores (torchmetrics
    pulls in torchvision and torch._dynamo), so a sweep trial calls this while the tracking store boots."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    return FrechetInceptionDistance, KernelInceptionDistance


def class_statistics(pred: torch.Tensor) -> dict[str, float]:
    """coverage (classes hit) and class_kl (KL of the predicted histogram from uniform, nats)."""
    share = torch.bincount(pred, minlength=NUM_CLASSES).double() / max(len(pred), 1)
    coverage = int((share >= COVERAGE_MIN_SHARE).sum())
    nz = share > 0
    kl = float((share[nz] * torch.log(share[nz] * NUM_CLASSES)).sum())
    return {"coverage": float(coverage), "class_kl": kl}


def inception_fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Inception FID (torchmetrics; grayscale repeated to 3 channels) for machines with its weights."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        fid = FrechetInceptionDistance(feature=2048, normalize=True)
    except Exception as exc:  # torch-fidelity missing, or its weights cannot be downloaded
        raise GanlabError(f"Inception FID is not available here ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); install "
                          "torch-fidelity and make its Inception weights reachable") from None

    def rgb01(x):
        x = (x.float().cpu() + 1) / 2
        return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x

    fid.update(rgb01(real), real=True)
    fid.update(rgb01(fake), real=False)
    return float(fid.compute())
