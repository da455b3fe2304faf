"""UQI / SSIM / MS-SSIM against sewar called correctly, on controlled images, to 1e-12."""

import warnings

import numpy as np
import pytest
import sewar
import torch
from scipy.ndimage import gaussian_filter

from ganlab.metrics.pairwise import msssim, quality_metrics, ssim, statistics, uqi, uqi_ssim_msssim

TOL = 1e-12  # the sewar-exact contract (README, the issue): float64 throughout, measured ~3e-15


def _pairs(kind, n=3, size=32, channels=1, seed=0):
    """uint8 HWC image pairs: the second is a blurred / noisier / identical copy of the first."""
    rng = np.random.default_rng(seed)
    # smooth random images, like generated ones, rather than white noise
    base = np.stack([gaussian_filter(rng.uniform(0, 255, (size, size, channels)), (1.5, 1.5, 0)) for _ in range(n)])
    base = np.clip((base - base.min()) / (np.ptp(base) + 1e-9) * 255, 0, 255).astype(np.uint8)
    if kind == "identical":
        other = base.copy()
    elif kind == "blurred":
        blurred = np.stack([gaussian_filter(b.astype(float), (1.0, 1.0, 0)) for b in base])
        other = blurred.round().clip(0, 255).astype(np.uint8)
    else:
        other = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    return base, other


def _ours(a, b):
    ta = torch.from_numpy(a).permute(0, 3, 1, 2).double() / 255
    tb = torch.from_numpy(b).permute(0, 3, 1, 2).double() / 255
    separate = uqi(ta, tb), ssim(ta, tb), msssim(ta, tb)
    for alone, shared in zip(separate, uqi_ssim_msssim(ta, tb)):  # what a prune run computes: the same numbers
        assert torch.equal(alone, shared)
    return tuple(t.numpy() for t in separate)


def _sewar(a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sewar warns that it caps MS-SSIM scales for small images
        return (np.array([sewar.uqi(x, y) for x, y in zip(a, b)]),
                np.array([sewar.ssim(x, y, MAX=255)[0] for x, y in zip(a, b)]),
                np.array([sewar.msssim(x, y, MAX=255) for x, y in zip(a, b)], dtype=float))


@pytest.mark.parametrize("kind", ["identical", "blurred", "noisy"])
@pytest.mark.parametrize("size,channels", [(32, 1), (64, 1), (32, 3), (64, 3), (45, 2)])  # 45: odd at every scale
def test_matches_sewar_on_controlled_images(kind, size, channels):
    a, b = _pairs(kind, size=size, channels=channels)
    for ours, ref, name in zip(_ours(a, b), _sewar(a, b), ("uqi", "ssim", "msssim")):
        assert np.isrealobj(ours)
        np.testing.assert_allclose(ours, ref, atol=TOL, err_msg=name)
        if kind == "identical":
            np.testing.assert_allclose(ours, 1.0, atol=1e-12)
        else:
            assert (ours < 1 - 1e-4).all(), (name, ours)


def test_images_split_into_cache_sized_blocks_score_as_one_batch_and_as_sewar(monkeypatch):
    import ganlab.metrics.pairwise as pq

    a, b = _pairs("noisy", n=7, size=45, channels=2)
    ta, tb = (torch.from_numpy(x).permute(0, 3, 1, 2).double() / 255 for x in (a, b))
    whole = pq.uqi_ssim_msssim(ta, tb)
    # at most 2 images a block on one thread: 7 images in blocks of 2, 2, 2, 1
    monkeypatch.setattr(pq, "BLOCK_ELEMENTS_PER_THREAD", 2 * ta[0].numel())
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    blocked = pq.uqi_ssim_msssim(ta, tb)
    for one, many, ref, name in zip(whole, blocked, _sewar(a, b), ("uqi", "ssim", "msssim")):
        assert many.shape == (7,)
        np.testing.assert_allclose(many.numpy(), one.numpy(), rtol=0, atol=1e-13, err_msg=name)
        np.testing.assert_allclose(many.numpy(), ref, atol=TOL, err_msg=name)
    empty = pq.uqi_ssim_msssim(ta[:0], tb[:0])
    assert [t.shape for t in empty] == [(0,)] * 3


@pytest.mark.parametrize("value", [0, 91, 178, 255])
def test_flat_images_and_flat_regions_take_sewars_special_cases(value):
    # flat windows make UQI's denominator 0 (sewar then gives 1, or 2 mu_x mu_y / (mu_x^2 + mu_y^2)) and SSIM's
    # sigmas rounding noise; a collapsed generator draws such images
    flat = np.full((4, 32, 32, 1), value, np.uint8)
    rng = np.random.default_rng(value)
    half = rng.integers(0, 256, flat.shape).astype(np.uint8)
    half[:, :, :16] = value
    for a, b in ((flat, flat), (flat, np.full_like(flat, 100)), (half, flat), (half, half)):
        for ours, ref, name in zip(_ours(a, b), _sewar(a, b), ("uqi", "ssim", "msssim")):
            np.testing.assert_allclose(ours, ref, atol=TOL, err_msg=f"{name} at {value}")


def test_more_noise_scores_lower():
    a, b = _pairs("noisy", seed=1)
    rng = np.random.default_rng(2)
    c = np.clip(a + rng.normal(0, 60, a.shape), 0, 255).astype(np.uint8)
    for mild, strong in zip(_ours(a, b), _ours(a, c)):
        assert (strong < mild).all()


def test_the_seeds_bug_is_the_dtype_not_the_metric():
    # sewar takes MAX from the dtype: int64 makes C1, C2 so large that SSIM reads ~1 for anything
    a, b = _pairs("noisy")
    bogus = sewar.ssim(a[0].astype(np.int64), b[0].astype(np.int64))[0]
    assert bogus == pytest.approx(1.0, abs=1e-9)
    assert _ours(a, b)[1][0] < 0.95


def test_quality_metrics_keys_and_statistics():
    torch.manual_seed(0)
    x = torch.rand(20, 1, 32, 32) * 2 - 1
    y = (x + 0.2 * torch.randn_like(x)).clamp(-1, 1)
    m = quality_metrics(x, y)
    assert set(m) == {f"{a}_{s}" for a in ("uqi", "ssim", "msssim")
                      for s in ("mean", "median", "mode", "max", "min", "var", "std")}
    assert all(isinstance(v, float) for v in m.values())
    assert m["ssim_min"] <= m["ssim_median"] <= m["ssim_max"] < 1
    assert m["ssim_std"] == pytest.approx(m["ssim_var"] ** 0.5)
    same = quality_metrics(x, x)
    assert same["ssim_mean"] == pytest.approx(1.0) and same["msssim_min"] == pytest.approx(1.0)


def test_statistics_against_numpy_and_scipy():
    from scipy import stats

    v = np.array([0.91, 0.912, 0.95, 0.951, 0.952, 0.99])
    s = statistics(v)
    assert s["mean"] == pytest.approx(v.mean()) and s["median"] == pytest.approx(np.median(v))
    assert s["var"] == pytest.approx(np.var(v)) and s["std"] == pytest.approx(np.std(v))
    assert s["mode"] == pytest.approx(float(stats.mode(np.round(v, 2)).mode))  # 0.95: three values round to it
