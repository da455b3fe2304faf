"""Pairwise image quality, the seed's metrics done right: UQI, SSIM, MS-SSIM as sewar defines them.

The seed's SSIM and MS-SSIM read "1.0+0.0j" for every comparison: sewar takes MAX from the
dtype when it is not given, so int64 arrays make C1 = (0.01 * 2**63)**2 swamp every term, and
its older MS-SSIM returned complex numbers. Here images are float64 in [0, 1] with MAX = 1, and
everything is computed batched in torch with sewar's exact definitions (window sizes, 'valid'
borders, the scale cap of sewar 0.4.10's MS-SSIM, even its quirks: UQI's N-scaled window means
and MS-SSIM's downsampling filter that also averages neighbouring channels). Results equal a
per-image sewar loop to ~1e-12 (tests/test_quality.py) and are real floats, 1 only for
identical images.
"""

from __future__ import annotations

import math

import numpy as np
import torch

MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> float64 in [0, 1]."""
    return ((images.detach().double().cpu() + 1.0) / 2.0).clamp_(0.0, 1.0)


def _filter_valid(x: torch.Tensor, window: tuple[torch.Tensor, torch.Tensor],
                  rows: slice = slice(None), cols: slice = slice(None)) -> torch.Tensor:
    """Per-channel 'valid' correlation of (N, C, H, W) with a separable window (sewar's filter2), or only
    its ``rows`` x ``cols`` part.

    Both of sewar's windows (uniform, Gaussian) are outer products of a 1-D kernel with itself, so
    the 2-D filter is two 1-D passes, each written as a product with a banded (Toeplitz) matrix:
    ``T_h @ x @ T_w^T``. Two batched float64 GEMMs run near BLAS speed, where a float64 conv2d
    falls back to a per-image im2col (6x slower for the 11x11 Gaussian at 64 px). A crop drops rows
    of the matrices, so the result is contiguous and no unused output is computed.
    """
    k_rows, k_cols = window
    t_h = _banded(k_rows.to(x), x.shape[-2])[rows]
    t_w = _banded(k_cols.to(x), x.shape[-1])[cols]
    return torch.matmul(torch.matmul(t_h, x), t_w.T)


def _banded(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """The (n - k + 1, n) matrix whose row i holds ``kernel`` at columns i .. i + k - 1."""
    k = kernel.numel()
    idx = torch.arange(n - k + 1).unsqueeze(1) + torch.arange(k)
    return torch.zeros(n - k + 1, n, dtype=kernel.dtype).scatter_(1, idx, kernel.expand(n - k + 1, k))


def _uniform_window(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.full((size,), 1.0 / size, dtype=torch.float64)
    return k, k


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    # sewar.utils.fspecial(Filter.GAUSSIAN) normalises exp(-(x^2+y^2)/2sigma^2) over the 2-D window
    # after zeroing entries below eps*max; for sigma=1.5, ws=11 the smallest entry is ~1e-5, so
    # nothing is cut and the window is exactly the outer product of the normalised 1-D Gaussian.
    r = torch.arange(-size // 2 + 1, size // 2 + 1, dtype=torch.float64)
    g = torch.exp(-(r**2) / (2.0 * sigma**2))
    if float(g.min() ** 2) < torch.finfo(torch.float64).eps * float(g.max() ** 2):
        raise ValueError("this window would be cut by sewar's eps threshold: not separable")
    g = g / g.sum()
    return g, g


def _moments(gt: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """gt, p, gt², p², gt·p as one contiguous (5, N, C, H, W) tensor: every metric filters these five maps,
    and building them once (no ``cat``) is a fifth of the metrics' time at 64 px."""
    out = torch.empty((5, *gt.shape), dtype=gt.dtype)
    out[0].copy_(gt)
    out[1].copy_(p)
    torch.mul(gt, gt, out=out[2])
    torch.mul(p, p, out=out[3])
    torch.mul(gt, p, out=out[4])
    return out


def uqi(gt: torch.Tensor, p: torch.Tensor, ws: int = 8) -> torch.Tensor:
    """Universal image quality index per image: (N, C, H, W) in [0, 1] -> (N,)."""
    return _uqi(_moments(gt, p), ws)


def _uqi(moments: torch.Tensor, ws: int = 8) -> torch.Tensor:
    n_window = ws**2
    # sewar: scipy uniform_filter (window [i - ws//2, i + ws//2 - 1]), then the border of
    # round(ws/2) cropped; inside that crop a 'valid' box mean gives the same values.
    crop = int(np.round(ws / 2))
    h_out, w_out = moments.shape[-2] - 2 * crop, moments.shape[-1] - 2 * crop
    start = crop - ws // 2
    m_gt, m_p, m_gt2, m_p2, m_gtp = _filter_valid(moments, _uniform_window(ws), slice(start, start + h_out),
                                                  slice(start, start + w_out)).unbind(0)
    prod = m_gt * m_p
    sq_sum = m_gt * m_gt + m_p * m_p
    numerator = 4 * (n_window * m_gtp - prod) * prod
    denominator1 = n_window * (m_gt2 + m_p2) - sq_sum
    denominator = denominator1 * sq_sum
    q = numerator / denominator
    zero = denominator == 0
    if bool(zero.any()):  # flat windows (rare in generated images): sewar's two special cases
        only_means = (denominator1 == 0) & (sq_sum != 0)
        special = torch.where(only_means, 2 * prod / torch.where(only_means, sq_sum, 1.0), 1.0)
        q = torch.where(zero, special, q)
    return q.mean(dim=(-2, -1)).mean(dim=1)


def _ssim_and_cs(moments, window, max_value=1.0, k1=0.01, k2=0.03):
    """sewar.ssim per image from ``_moments``: mean SSIM map and mean contrast-structure map, averaged over
    channels."""
    c1, c2 = (k1 * max_value) ** 2, (k2 * max_value) ** 2
    mu_gt, mu_p, e_gt2, e_p2, e_gtp = _filter_valid(moments, window).unbind(0)  # one pass over all five maps
    mu_gt2, mu_p2, mu_gtp = mu_gt * mu_gt, mu_p * mu_p, mu_gt * mu_p
    # in place on the filtered maps, in sewar's order of operations:
    # cs = (2 sigma_gtp + c2) / (sigma_gt + sigma_p + c2); ssim = (2 mu_gtp + c1) / (mu_gt2 + mu_p2 + c1) * cs
    sigma_gt = e_gt2.sub_(mu_gt2)
    sigma_p = e_p2.sub_(mu_p2)
    sigma_gtp = e_gtp.sub_(mu_gtp)
    cs_map = sigma_gtp.mul_(2).add_(c2).div_(sigma_gt.add_(sigma_p).add_(c2))
    ssim_map = mu_gtp.mul_(2).add_(c1).div_(mu_gt2.add_(mu_p2).add_(c1)).mul_(cs_map)
    return ssim_map.mean(dim=(-2, -1)).mean(dim=1), cs_map.mean(dim=(-2, -1)).mean(dim=1)


def ssim(gt: torch.Tensor, p: torch.Tensor, ws: int = 11, max_value: float = 1.0) -> torch.Tensor:
    """SSIM per image with sewar's defaults (11x11 uniform window, 'valid'): (N,)."""
    return _ssim_and_cs(_moments(gt, p), _uniform_window(ws), max_value)[0]


def _sewar_downsample(x: torch.Tensor) -> torch.Tensor:
    """scipy uniform_filter(im, 2) on an H x W x C image, then [::2, ::2]: a 2-tap mean
    [i-1, i] (edge reflected: (x[0] + x[0]) / 2 at the first index) along H, W *and channels*, as sewar's
    msssim does. Along H and W only the kept (even) entries are computed, in the same order of operations."""
    y = x.clone()
    y[:, 1:] = (x[:, :-1] + x[:, 1:]) / 2.0  # channels; the first is its own mean
    for _ in range(2):  # rows, then (transposed) columns; the second transpose puts them back
        even, odd = y[..., 0::2, :], y[..., 1::2, :]  # the kept (even) ones, each with the one before
        kept = even.clone()
        kept[..., 1:, :] = (odd[..., :even.shape[-2] - 1, :] + even[..., 1:, :]) / 2.0
        y = kept.transpose(-2, -1)
    return y


def msssim(gt: torch.Tensor, p: torch.Tensor, ws: int = 11, max_value: float = 1.0,
           weights=MSSSIM_WEIGHTS, first: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-scale SSIM per image as sewar 0.4.10 computes it: (N,), real. ``first``: ``_moments(gt, p)``
    when the caller has it already."""
    min_dim = min(gt.shape[-2], gt.shape[-1])
    if min_dim < ws:
        raise ValueError(f"images must be at least {ws} px for MS-SSIM, got {min_dim}")
    scales = min(len(weights), int(math.floor(math.log2(min_dim / ws))) + 1)
    w = torch.tensor(weights[:scales], dtype=torch.float64)
    window = _gaussian_window(ws, 1.5)
    mssim, mcs = [], []
    for scale in range(scales):
        s, cs = _ssim_and_cs(first if scale == 0 and first is not None else _moments(gt, p), window, max_value)
        mssim.append(s)
        mcs.append(cs)
        if scale + 1 < scales:
            gt, p = _sewar_downsample(gt), _sewar_downsample(p)
    # sewar raises to the weights in complex arithmetic (a negative cs gives a complex power) and
    # returns the real part; do the same so the numbers agree everywhere.
    mcs_c = torch.stack(mcs[:-1], dim=1).to(torch.complex128) if scales > 1 else None
    last = mssim[-1].to(torch.complex128) ** w[-1]
    prod = torch.prod(mcs_c ** w[:-1], dim=1) if mcs_c is not None else 1.0
    return (prod * last).real


# Images per block are chosen so that a block's float64 maps stay in the cores' caches: the metrics are
# some thirty elementwise passes over five moment maps, memory-bound once those spill. 300 pairs at
# 64x64x3 in one block ran 2.7x (2 threads) and 2.4x (1 thread) slower than in blocks of 2**17 elements
# per thread, on a Xeon with 2 MiB of L2 per core (best of 12, interleaved; 2**16 and 2**19 were slower).
BLOCK_ELEMENTS_PER_THREAD = 2**17


def uqi_ssim_msssim(gt: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """UQI, SSIM and MS-SSIM per image of (N, C, H, W) float64 in [0, 1], with sewar's defaults: the three
    share the full-scale moment maps (each of ``uqi``, ``ssim``, ``msssim`` alone builds its own), computed
    in cache-sized blocks of images."""
    n = len(gt)
    most = max(1, BLOCK_ELEMENTS_PER_THREAD * torch.get_num_threads() // max(1, math.prod(gt.shape[1:])))
    block = -(-n // -(-n // most)) if n else 1  # blocks of equal size, no small tail
    scores = [_uqi_ssim_msssim(gt[i:i + block], p[i:i + block]) for i in range(0, max(n, 1), block)]
    return tuple(torch.cat(metric) for metric in zip(*scores))


def _uqi_ssim_msssim(gt: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    moments = _moments(gt, p)
    return _uqi(moments), _ssim_and_cs(moments, _uniform_window(11))[0], msssim(gt, p, first=moments)


def pairwise_quality(dense: torch.Tensor, pruned: torch.Tensor, chunk: int = 256) -> dict[str, np.ndarray]:
    """Per-image UQI, SSIM and MS-SSIM between two batches of generator output in [-1, 1]."""
    out = {"uqi": [], "ssim": [], "msssim": []}
    for i in range(0, len(dense), chunk):
        for name, scores in zip(out, uqi_ssim_msssim(to_unit_range(dense[i:i + chunk]),
                                                     to_unit_range(pruned[i:i + chunk]))):
            out[name].append(scores)
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def statistics(values: np.ndarray) -> dict[str, float]:
    """The seed's statistics of per-image scores. ``mode`` is the most frequent value after
    rounding to 0.01 (the seed's scipy mode of unrounded floats was simply the minimum)."""
    values = np.asarray(values, dtype=np.float64)
    rounded = np.round(values, 2)
    uniq, counts = np.unique(rounded, return_counts=True)
    return {"mean": float(values.mean()), "median": float(np.median(values)),
            "mode": float(uniq[np.argmax(counts)]), "max": float(values.max()), "min": float(values.min()),
            "var": float(values.var()), "std": float(values.std())}


def quality_metrics(dense: torch.Tensor, pruned: torch.Tensor) -> dict[str, float]:
    """``{uqi,ssim,msssim}_{mean,median,mode,max,min,var,std}`` for two batches in [-1, 1]."""
    per_image = pairwise_quality(dense, pruned)
    return {f"{metric}_{stat}": value for metric, scores in per_image.items()
            for stat, value in statistics(scores).items()}
