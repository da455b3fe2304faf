"""FCD / KID / coverage in the scoring classifier's feature space, checked against numpy/scipy
(ganlab/metrics/distribution.py; `ganlab evaluate`: runs/evaluate.py)."""

import numpy as np
import pytest
import torch
from scipy import linalg

from ganlab.gan.data import load_images, to_model_range
from ganlab.gan.models import Generator, weights_init
from ganlab.metrics.distribution import class_statistics


def test_classifier_reaches_90_percent_on_fashion_mnist(evaluator_32):
    assert evaluator_32.test_accuracy >= 0.90


def test_fcd_separates_real_from_untrained(evaluator_32):
    train = to_model_range(load_images("fashion-mnist", 32, limit=1000).images)
    torch.manual_seed(0)
    g = Generator(ngf=16, image_size=32)
    g.apply(weights_init)
    untrained = g.eval()(torch.randn(1000, 100, 1, 1)).detach()
    real = evaluator_32.evaluate_images(train)
    fake = evaluator_32.evaluate_images(untrained)
    assert real["fcd"] * 20 < fake["fcd"]
    assert real["kid"] < 0.1 * fake["kid"]
    assert real["coverage"] == 10 and real["class_kl"] < 0.05


def test_fcd_and_kid_equal_a_direct_scipy_computation(evaluator_32):
    real = to_model_range(evaluator_32.real_images[:400])
    fake = to_model_range(load_images("fashion-mnist", 32, limit=400).images)
    fake = (fake + 0.3 * torch.randn_like(fake)).clamp(-1, 1)
    with torch.no_grad():
        fr, ff = (evaluator_32.classifier.features(x).double().numpy() for x in (real, fake))
    mu1, mu2 = fr.mean(0), ff.mean(0)
    s1, s2 = np.cov(fr, rowvar=False), np.cov(ff, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    fcd_ref = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
    m = evaluator_32.evaluate_images(fake, real=real)
    assert m["fcd"] == pytest.approx(fcd_ref, rel=1e-3)
    # KID with all 400 samples in one subset is the unbiased polynomial-kernel MMD^2
    d = fr.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3
    n = len(fr)
    kxx, kyy, kxy = k(fr, fr), k(ff, ff), k(fr, ff)
    mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (n * (n - 1)) - 2 * kxy.mean()
    assert m["kid"] == pytest.approx(mmd, rel=1e-3)


def test_one_image_generator_covers_at_most_two_classes(evaluator_32):
    one = to_model_range(load_images("fashion-mnist", 32, limit=1).images).repeat(500, 1, 1, 1)
    m = evaluator_32.evaluate_images(one)
    assert m["coverage"] <= 2 and m["class_kl"] > 1.5


def test_a_ready_evaluator_carries_its_real_features_through_pickling(evaluator_32):
    import copy
    import pickle

    fresh = copy.copy(evaluator_32)
    fresh._real_features = None
    expected = fresh.features_and_logits(to_model_range(fresh.real_images))[0]
    assert pickle.loads(pickle.dumps(fresh))._real_features is None  # what each sweep trial used to get
    trial_copy = pickle.loads(pickle.dumps(fresh.ready()))
    assert trial_copy._real_features is not None and torch.equal(trial_copy._real_features, expected)
    kept = trial_copy._real_features
    trial_copy.evaluate_images(to_model_range(fresh.real_images[:50]))
    assert trial_copy._real_features is kept  # scoring uses them, not a second extraction


def test_class_statistics():
    uniform = torch.arange(1000) % 10
    assert class_statistics(uniform) == {"coverage": 10.0, "class_kl": pytest.approx(0.0, abs=1e-12)}
    skewed = torch.cat([torch.zeros(990, dtype=torch.long), torch.arange(10)])
    s = class_statistics(skewed)
    shares = np.array([0.991] + [0.001] * 9)
    assert s["coverage"] == 1 and s["class_kl"] == pytest.approx(float((shares * np.log(shares * 10)).sum()), rel=1e-9)


def _gaussian_truth(real: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """The Fréchet distance between the reals' sample moments and the fake population N(mu, diag sigma²), by
    scipy's sqrtm (the reference)."""
    cov_r = np.cov(real, rowvar=False)
    root = linalg.sqrtm(cov_r @ np.diag(sigma**2)).real
    return float(((real.mean(0) - mu) ** 2).sum() + np.trace(cov_r) + (sigma**2).sum() - 2 * np.trace(root))


def test_the_frechet_distance_equals_torchmetrics_fid_on_the_same_features():
    from torchmetrics.image.fid import FrechetInceptionDistance

    from ganlab.metrics.distribution import _Precomputed, frechet, real_moments

    rng = np.random.default_rng(0)
    real = torch.from_numpy(rng.normal(size=(600, 128)))
    fake = torch.from_numpy(0.1 + rng.normal(size=(400, 128)) * np.linspace(0.5, 1.5, 128))
    fid = FrechetInceptionDistance(feature=_Precomputed(128))
    fid.update(real.float(), real=True)
    fid.update(fake.float(), real=False)
    ours = frechet(fake.numpy(), *real_moments(real))
    assert ours == pytest.approx(float(fid.compute()), rel=2e-3)  # torchmetrics accumulates in float64 too


def test_fcd_infinity_removes_the_small_sample_bias_that_fcd_at_1000_images_carries():
    """Controlled input: 128-d Gaussian features with a known Fréchet distance to the reals (scipy's sqrtm). At
    1,000 generated images FCD reads ~40 % high here; FCD∞ (Chong & Forsyth's 1/N extrapolation) must remove at
    least 90 % of that bias, over 30 independent draws."""
    from ganlab.metrics.distribution import fcd_infinity, frechet, real_moments

    rng = np.random.default_rng(0)
    real = rng.normal(size=(2000, 128))
    mu, sigma = np.full(128, 0.05), np.linspace(0.6, 1.4, 128)
    truth = _gaussian_truth(real, mu, sigma)
    moments = real_moments(torch.from_numpy(real))
    at_n, infinite = [], []
    for k in range(30):
        fake = mu + sigma * rng.normal(size=(1000, 128))
        at_n.append(frechet(fake, *moments))
        infinite.append(fcd_infinity(torch.from_numpy(fake), *moments, seed=k))
    bias_n, bias_inf = np.mean(at_n) - truth, np.mean(infinite) - truth
    assert bias_n > 0.3 * truth  # the bias this is about
    assert abs(bias_inf) < 0.1 * bias_n and abs(bias_inf) < 0.05 * truth


def test_every_evaluation_reports_fcd_infinity_beside_fcd(evaluator_32):
    images = to_model_range(load_images("fashion-mnist", 32, train=False, limit=600).images)
    got = evaluator_32.evaluate_images(images)
    assert np.isfinite(got["fcd_inf"]) and got["fcd_inf"] < got["fcd"] + 1.0  # bias is upward: FCD∞ is not above
