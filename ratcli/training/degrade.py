"""Degradation simulators: turn a full-quality image into the low-quality input of a task.

- CT: projection-domain low-dose simulation (parallel-beam forward projection, Poisson
  noise at an incident photon count set by the dose fraction, optional electronic noise,
  log, filtered back-projection), in HU through the attenuation coefficient of water.
- PET: count-level reduction by Poisson thinning to a dose fraction, rescaled back to
  the full-dose level.
- SR: anti-aliased bicubic downsampling by 2 or 4, with optional blur, noise and JPEG.

Each simulator is a frozen dataclass (its settings are the provenance record) whose
`__call__(image, rng)` returns the degraded image. `make_degradation(task, ...)` picks
one from the task table.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ratcli.errors import UsageError
from ratcli.io.image import Image
from ratcli.tasks import TaskSpec

__all__ = [
    "Degradation",
    "LowDoseCT",
    "LowCountPET",
    "BicubicDown",
    "make_degradation",
    "MU_WATER_PER_MM",
]

# Pixel size assumed for a bare array with no spacing (mm): a 512 px, 350 mm field of view.
DEFAULT_PIXEL_MM = 0.7
# Linear attenuation coefficient of water at ~70 keV effective energy (0.192 /cm), 1/mm.
MU_WATER_PER_MM = 0.0192


class Degradation:
    """Interface: `__call__(image, rng) -> degraded`; `describe() -> dict` for provenance."""

    name: str = "none"

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def for_image(self, image: Image) -> Degradation:
        """This simulator adapted to one image's geometry (default: unchanged)."""
        return self

    def describe(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]  (subclasses are dataclasses)


@dataclass(frozen=True)
class LowDoseCT(Degradation):
    """Low-dose CT by noise insertion in the projection domain.

    The clean slice (HU) becomes attenuation mu = MU_WATER * (1 + HU/1000) (>= 0), is
    forward projected (parallel beam, `views` angles over 180 degrees, line integrals in
    mm x 1/mm), and each ray gets Poisson counts at `photons * dose` incident photons plus
    Gaussian electronic noise (std `electronic_noise` counts); -log gives noisy line
    integrals. Only the *difference* noisy - clean sinogram is reconstructed with FBP
    (`filter_name`) and added to the slice: FBP is linear, so this equals reconstructing
    the noisy sinogram while leaving the slice free of the projector's discretisation
    blur. The clean slice is treated as noise-free, so image noise std goes as
    1 / sqrt(photons * dose).

    photons: incident photons per ray at full dose (dose = 1).
    dose: dose fraction in (0, 1], e.g. 0.25 for quarter dose.
    pixel_mm: in-plane pixel size in mm (noise depends on it, as on a scanner); None =
        each image's own x spacing (`for_image`), DEFAULT_PIXEL_MM for a bare array.
    """

    dose: float = 0.25
    photons: float = 1e6
    electronic_noise: float = 0.0
    views: int = 360
    pixel_mm: float | None = None
    filter_name: str = "shepp-logan"
    name: str = "ct-lowdose"

    def __post_init__(self) -> None:
        _check_dose(self.dose)
        bad_px = self.pixel_mm is not None and self.pixel_mm <= 0
        if self.photons <= 0 or self.views < 2 or bad_px or self.electronic_noise < 0:
            raise UsageError(
                "CT simulator: photons and pixel_mm must be > 0, views >= 2, electronic noise >= 0"
            )

    def for_image(self, image: Image) -> LowDoseCT:
        """The same simulator at the image's in-plane pixel size (x spacing, mm), unless
        pixel_mm was set explicitly."""
        if self.pixel_mm is not None:
            return self  # set explicitly: it wins over the file's spacing
        return replace(self, pixel_mm=float(image.spacing[0]))

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """image: (H, W) float HU. Returns (H, W) float32 HU with low-dose noise."""
        from skimage.transform import iradon, radon  # late: only CT simulation needs it

        H, W = image.shape
        mu = np.clip(MU_WATER_PER_MM * (1.0 + image.astype(np.float64) / 1000.0), 0.0, None)
        # square canvas so radon/iradon share one geometry for any H, W
        n = max(H, W)
        canvas = np.zeros((n, n))
        canvas[(n - H) // 2:(n - H) // 2 + H, (n - W) // 2:(n - W) // 2 + W] = mu
        theta = np.linspace(0.0, 180.0, self.views, endpoint=False)
        px = self.pixel_mm or DEFAULT_PIXEL_MM
        line = radon(canvas, theta=theta, circle=False) * px  # dimensionless
        i0 = self.photons * self.dose
        counts = rng.poisson(i0 * np.exp(-line)).astype(np.float64)
        if self.electronic_noise > 0:
            counts += rng.normal(0.0, self.electronic_noise, counts.shape)
        # a detector never reports fewer than ~1 photon; clamp before the log
        noisy = -np.log(np.maximum(counts, 0.5) / i0)
        delta = iradon((noisy - line) / px, theta=theta, circle=False,
                       output_size=n, filter_name=self.filter_name)
        delta = delta[(n - H) // 2:(n - H) // 2 + H, (n - W) // 2:(n - W) // 2 + W]
        return (image + 1000.0 * delta / MU_WATER_PER_MM).astype(np.float32)


@dataclass(frozen=True)
class LowCountPET(Degradation):
    """Low-dose PET by Poisson thinning of the full-dose counts.

    The full-dose image (activity, any unit >= 0) is read as expected counts
    lambda = k * activity, with k set so that the mean over the active voxels (>= 5 % of
    the maximum) is `counts` events per voxel. Thinning a Poisson acquisition keeps each
    event with probability `dose`, which gives Poisson(dose * lambda) events; the result
    is divided by dose * k, so its expectation is the full-dose activity again.
    """

    dose: float = 0.25
    counts: float = 30.0
    name: str = "pet-thinning"

    def __post_init__(self) -> None:
        _check_dose(self.dose)
        if self.counts <= 0:
            raise UsageError(f"PET simulator: counts per voxel must be > 0, got {self.counts}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """image: (H, W) float activity >= 0. Returns (H, W) float32, same unit."""
        activity = np.clip(image.astype(np.float64), 0.0, None)
        k = self.counts_per_unit(activity)
        if k == 0.0:
            return activity.astype(np.float32)
        events = rng.poisson(self.dose * k * activity)
        return (events / (self.dose * k)).astype(np.float32)

    def counts_per_unit(self, activity: np.ndarray) -> float:
        """k: full-dose expected counts per unit of activity (0 for an empty image)."""
        top = float(activity.max())
        if top <= 0:
            return 0.0
        active = activity[activity >= 0.05 * top]
        return self.counts / float(active.mean())


@dataclass(frozen=True)
class BicubicDown(Degradation):
    """SR input: optional Gaussian blur, anti-aliased bicubic downsampling by `scale`,
    optional Gaussian noise (std in uint8 levels) and JPEG (quality 1-100, 0 = off).

    Anti-aliased bicubic (the kernel widened by the scale factor, like MATLAB's imresize
    and PIL's BICUBIC) is the standard SR degradation; its weights sum to one, so a
    constant image stays constant.
    """

    scale: int = 4
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    jpeg_quality: int = 0
    name: str = "sr-bicubic"

    def __post_init__(self) -> None:
        if self.scale not in (2, 4):
            raise UsageError(f"SR simulator: scale must be 2 or 4, got {self.scale}")
        if self.blur_sigma < 0 or self.noise_sigma < 0 or not 0 <= self.jpeg_quality <= 100:
            raise UsageError("SR simulator: blur and noise must be >= 0, JPEG quality 0-100")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """image: (H, W, 3) uint8 with H, W multiples of `scale`.
        Returns (H/scale, W/scale, 3) uint8."""
        H, W, _ = image.shape
        if H % self.scale or W % self.scale:
            raise ValueError(f"image {H}x{W} is not a multiple of the scale {self.scale}")
        x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]  # (1, 3, H, W)
        if self.blur_sigma > 0:
            x = _gaussian_blur(x, self.blur_sigma)
        x = F.interpolate(x, size=(H // self.scale, W // self.scale), mode="bicubic",
                          antialias=True, align_corners=False)
        low = x[0].permute(1, 2, 0).numpy().astype(np.float64)  # (h, w, 3)
        if self.noise_sigma > 0:
            low = low + rng.normal(0.0, self.noise_sigma, low.shape)
        low = np.clip(np.rint(low), 0, 255).astype(np.uint8)
        if self.jpeg_quality > 0:
            low = _jpeg_round_trip(low, self.jpeg_quality)
        return low


def make_degradation(
    task: TaskSpec,
    *,
    dose: float = 0.25,
    photons: float = 1e6,
    electronic_noise: float = 0.0,
    pixel_mm: float | None = None,
    counts: float = 30.0,
    blur_sigma: float = 0.0,
    noise_sigma: float = 0.0,
    jpeg_quality: int = 0,
) -> Degradation:
    """The simulator for `task` (by modality: CT, PT, or SR for the sr-x* tasks)."""
    if task.kind == "sr":
        return BicubicDown(scale=task.scale, blur_sigma=blur_sigma, noise_sigma=noise_sigma,
                           jpeg_quality=jpeg_quality)
    if task.modality == "CT":
        return LowDoseCT(dose=dose, photons=photons, electronic_noise=electronic_noise,
                         pixel_mm=pixel_mm)
    if task.modality == "PT":
        return LowCountPET(dose=dose, counts=counts)
    raise UsageError(f"task {task.name}: no degradation simulator for modality {task.modality}")


def _check_dose(dose: float) -> None:
    if not 0.0 < dose <= 1.0:
        raise UsageError(f"dose fraction must be in (0, 1], got {dose}")


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflect padding (radius 3 sigma)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    C = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def _jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode (h, w, 3) uint8 as JPEG at `quality`."""
    from PIL import Image as PILImage  # late: only the JPEG option needs it

    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(PILImage.open(buf).convert("RGB"), dtype=np.uint8)
