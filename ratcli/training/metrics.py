"""Image quality metrics in physical units, plus the paper-style uint8-Y metrics.

Primary metrics are float metrics on the physical intensities:
- CT: HU over the task's full normalisation range (-1024..3072 HU, data range 4096 HU),
  and again with both images clipped to a stated display window (soft tissue,
  W400/L40: -160..240 HU, data range 400 HU).
- PET: activity in the file's unit; the data range is the target's (max - min).
- Pathology: RGB uint8 values as floats over all three channels, data range 255.

The paper-style extras (`*_y8`) quantise to uint8 first, as the RAT reference code
does: CT/PET through the task window to 0..255; RGB through the ITU-R BT.601 luma (Y of
YCbCr, 16..235) with a `scale`-pixel border cropped for SR (the usual SR convention).
They inflate PSNR and are only reported as a labelled extra.

SR also reports `overshoot`: how far the output leaves the target's 3x3 range next to
its strongest edges, split into `ringing` (halos and dark rims around nuclei) and
`edge_smear` (an edge blurred across; most of it at x4).

SSIM is scikit-image's `structural_similarity` with Wang et al.'s settings (Gaussian
window sigma 1.5, population covariance), the convention of the SR/denoising papers.
"""

from __future__ import annotations

import math

import numpy as np

from ratcli.tasks import Norm, TaskSpec

__all__ = [
    "METRIC_COLUMNS",
    "MetricDefinitions",
    "image_metrics",
    "psnr",
    "rmse",
    "ssim",
    "summarize",
    "rgb_to_y",
    "definitions",
    "CT_DISPLAY_WINDOW",
    "overshoot_at_edges",
    "overshoot_split",
]

# Soft-tissue display window (W400 / L40), HU.
CT_DISPLAY_WINDOW: tuple[float, float] = (-160.0, 240.0)

# Every per-image record has these metric keys (NaN where a task has no such metric).
METRIC_COLUMNS: tuple[str, ...] = (
    "psnr", "ssim", "rmse", "psnr_window", "ssim_window", "rmse_window", "psnr_y8", "ssim_y8",
    "overshoot", "ringing", "edge_smear",
)

MetricDefinitions = dict[str, str]


def image_metrics(pred: np.ndarray, target: np.ndarray, *, task: TaskSpec) -> dict[str, float]:
    """All metrics of one restored image against its target.

    pred, target: (H, W) float in physical units (HU for CT, activity for PET) or
    (H, W, 3) uint8 RGB for the SR tasks; same shape. Returns {column: value} for every
    name in METRIC_COLUMNS (NaN where not defined for the task).
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    out = dict.fromkeys(METRIC_COLUMNS, math.nan)
    p, t = pred.astype(np.float64), target.astype(np.float64)
    span = task.data_range(t)  # the task's rule: HU window, 255, or the target's span
    out.update(psnr=psnr(p, t, span), ssim=ssim(p, t, span), rmse=rmse(p, t))
    if task.norm is Norm.UINT8:
        b = task.scale
        py = rgb_to_y(pred)[b:-b or None, b:-b or None]
        ty = rgb_to_y(target)[b:-b or None, b:-b or None]
        ringing, smear = overshoot_split(pred, target)
        out.update(psnr_y8=psnr(py, ty, 255.0), ssim_y8=ssim(py, ty, 255.0),
                   overshoot=ringing + smear, ringing=ringing, edge_smear=smear)
        return out
    if task.norm is Norm.HU:
        lo, hi = task.window
        wlo, whi = CT_DISPLAY_WINDOW
        pw, tw = np.clip(p, wlo, whi), np.clip(t, wlo, whi)
        out.update(psnr_window=psnr(pw, tw, whi - wlo), ssim_window=ssim(pw, tw, whi - wlo),
                   rmse_window=rmse(pw, tw))
    else:
        lo, hi = float(t.min()), float(t.min()) + span
    p8, t8 = _to_uint8(p, lo, hi), _to_uint8(t, lo, hi)
    out.update(psnr_y8=psnr(p8, t8, 255.0), ssim_y8=ssim(p8, t8, 255.0))
    return out


def definitions(task: TaskSpec) -> MetricDefinitions:
    """What each metric column means for `task` (written into the JSON report)."""
    if task.norm is Norm.UINT8:
        return {
            "psnr": "dB, RGB uint8 values as float, all channels, data range 255",
            "ssim": "RGB, Gaussian window sigma 1.5, per channel then averaged, data range 255",
            "rmse": "RGB levels (0-255)",
            "psnr_y8": f"paper-style: BT.601 Y channel quantised to uint8, {task.scale}-px border "
                       "cropped, data range 255",
            "ssim_y8": "paper-style: as psnr_y8",
            "overshoot": "RGB levels by which the output leaves the target's 3x3 range, "
                         "mean over pixels within 2 px of the strongest 10 % target edges "
                         "(= ringing + edge_smear)",
            "ringing": "the part of overshoot on the side the target pixel is on (halos "
                       "on the bright side of an edge, dark rims on the dark side)",
            "edge_smear": "the part of overshoot on the other side: an edge blurred across "
                          "more than a pixel",
        }
    if task.norm is Norm.HU:
        lo, hi = task.window
        wlo, whi = CT_DISPLAY_WINDOW
        return {
            "psnr": f"dB, HU, data range {hi - lo:g} HU (full range {lo:g}..{hi:g} HU)",
            "ssim": f"HU, data range {hi - lo:g} HU, Gaussian window sigma 1.5",
            "rmse": "HU, unclipped",
            "psnr_window": f"dB, both images clipped to display window {wlo:g}..{whi:g} HU "
                           f"(W{whi - wlo:g}/L{(whi + wlo) / 2:g}), data range {whi - wlo:g} HU",
            "ssim_window": "as psnr_window",
            "rmse_window": "HU, within the display window",
            "psnr_y8": f"paper-style: {lo:g}..{hi:g} HU quantised to uint8, data range 255",
            "ssim_y8": "paper-style: as psnr_y8",
        }
    return {
        "psnr": "dB, activity in the file's unit, data range = target max - min per image",
        "ssim": "activity, data range = target max - min per image, Gaussian window sigma 1.5",
        "rmse": "activity, file's unit",
        "psnr_y8": "paper-style: target min..max quantised to uint8, data range 255",
        "ssim_y8": "paper-style: as psnr_y8",
    }


def overshoot_at_edges(pred: np.ndarray, target: np.ndarray) -> float:
    """Overshoot of an (H, W, 3) uint8 output: how far it leaves the target's own range in
    each pixel's 3x3 neighbourhood, mean over the pixels within 2 px of the strongest
    10 % edges of the target (BT.601 luma Sobel gradient), in levels. The sum of the two
    parts of `overshoot_split`: ringing (halos, dark rims) and edge smear."""
    ringing, smear = overshoot_split(pred, target)
    return ringing + smear


def overshoot_split(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """`overshoot_at_edges` in two parts, (ringing, edge smear), in levels.

    Where the output leaves the target's 3x3 range on the side the target pixel itself
    is on (above the range on the bright side of the nearby edge, below it on the dark
    side) it is ringing: a halo or a rim. On the other side the edge was smeared across:
    a blur wider than a pixel also leaves the 3x3 range, and at x4 that is most of the
    overshoot (one input pixel spans four output pixels). The side is judged against
    the middle of the target's 7x7 range, which reaches the edge from every pixel of
    the band (a plateau's own 3x3 range cannot tell which side of the edge it is on).
    """
    from scipy import ndimage

    t, p = target.astype(np.float64), pred.astype(np.float64)
    y = rgb_to_y(target)
    grad = np.hypot(ndimage.sobel(y, 0), ndimage.sobel(y, 1))
    band = ndimage.binary_dilation(grad > np.percentile(grad, 90), iterations=2)
    if not band.any():
        return 0.0, 0.0
    hi = ndimage.maximum_filter(t, size=(3, 3, 1))
    lo = ndimage.minimum_filter(t, size=(3, 3, 1))
    above, below = np.maximum(p - hi, 0.0), np.maximum(lo - p, 0.0)
    wide = (7, 7, 1)
    bright = t >= (ndimage.maximum_filter(t, size=wide) + ndimage.minimum_filter(t, size=wide)) / 2
    ringing = np.where(bright, above, below)
    smear = np.where(bright, below, above)
    return float(ringing[band].mean()), float(smear[band].mean())


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float) -> float:
    """10 log10(data_range^2 / MSE) in dB; inf for identical images."""
    mse = float(np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2)))


def ssim(pred: np.ndarray, target: np.ndarray, data_range: float) -> float:
    """Mean SSIM; (H, W) or (H, W, C) (channels averaged). Images need H, W >= 7."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(
        target.astype(np.float64), pred.astype(np.float64), data_range=data_range,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        channel_axis=-1 if pred.ndim == 3 else None,
    ))


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of (H, W, 3) uint8 RGB, in 16..235, rounded to uint8 values."""
    x = rgb.astype(np.float64) / 255.0
    y = 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]
    return np.rint(y)


def summarize(values: list[float] | np.ndarray) -> dict[str, float]:
    """mean, sample std (ddof=1), and the two-sided 95 % t confidence interval of the
    mean over the finite values; n counts them. std/CI are NaN for fewer than 2 values."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "ci95_low": math.nan,
                "ci95_high": math.nan}
    mean = float(v.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "std": math.nan, "ci95_low": math.nan,
                "ci95_high": math.nan}
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}


def _to_uint8(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map lo..hi to 0..255, clip and round (the reference code's quantisation)."""
    return np.clip(np.rint((x - lo) / (hi - lo) * 255.0), 0, 255)
