"""Deterministic synthetic phantoms for tests, examples and training smoke runs.

Every function is pure numpy and seeded: the same arguments give the same bytes on
any machine. Volumes change along Z (organs grow and shrink with the slice index), so
a per-slice method cannot pass a test by seeing one repeated slice.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ct_phantom", "pet_phantom", "he_tile", "smooth_noise"]

# CT attenuation values (HU) of the tissues the phantom draws.
_HU_AIR = -1000.0
_HU_LUNG = -850.0
_HU_FAT = -100.0
_HU_SOFT = 40.0
_HU_KIDNEY = 30.0
_HU_LIVER = 60.0
_HU_CANCELLOUS = 700.0
_HU_CORTICAL = 1000.0


def ct_phantom(size: int = 128, slices: int = 1, seed: int = 0) -> np.ndarray:
    """An abdomen/lower-thorax CT phantom in Hounsfield units.

    size: edge of each square slice in pixels. slices: number of slices (Z).
    seed: texture seed; geometry is fixed, only the texture depends on it.
    Returns (Z, Y, X) float32 HU: air -1000 outside a body ellipse of soft tissue
    (~40 HU) with a subcutaneous fat ring (-100), two lungs (-850, shrinking towards
    the last slice), liver (60, growing), two kidneys (30), a vertebra (cancellous
    700, cortical rim 1000) and ribs, plus smooth texture (~±15 HU in soft tissue,
    ~±40 HU in lung) so a denoiser has structure to keep.
    """
    _check_shape(size=size, slices=slices)
    rng = np.random.default_rng(seed)
    texture = smooth_noise((slices, size, size), sigma_px=size / 40, rng=rng)
    fine = smooth_noise((slices, size, size), sigma_px=size / 128, rng=rng)
    out = np.empty((slices, size, size), dtype=np.float32)
    for z in range(slices):
        t = _slice_position(z, slices)
        out[z] = _ct_slice(size=size, t=t, coarse=texture[z], fine=fine[z])
    return out


def pet_phantom(size: int = 64, slices: int = 1, seed: int = 0) -> np.ndarray:
    """A whole-body-like PET phantom of activity concentration (arbitrary kBq/ml).

    Returns (Z, Y, X) float32 >= 0: zero outside the body, ~1 background in the body,
    liver ~3, myocardium ring ~6 (fading towards the last slice), kidneys ~4, and hot
    lesions 8-15 whose positions and presence depend on `seed` and the slice, with
    mild smooth texture (±10 %) inside the body.
    """
    _check_shape(size=size, slices=slices)
    rng = np.random.default_rng(seed)
    texture = 1.0 + 0.1 * smooth_noise((slices, size, size), sigma_px=size / 20, rng=rng)
    # Lesions: centre (y, x) in [-1, 1]^2, centre slice position t in [0, 1], radius, uptake.
    n_lesions = 4
    lesions = np.column_stack([
        rng.uniform(-0.45, 0.45, n_lesions),
        rng.uniform(-0.6, 0.6, n_lesions),
        np.concatenate([[0.5], rng.uniform(0.0, 1.0, n_lesions - 1)]),  # one always mid-volume
        rng.uniform(0.05, 0.1, n_lesions),
        rng.uniform(8.0, 15.0, n_lesions),
    ])
    out = np.empty((slices, size, size), dtype=np.float32)
    for z in range(slices):
        t = _slice_position(z, slices)
        out[z] = _pet_slice(size=size, t=t, lesions=lesions) * texture[z]
    return np.clip(out, 0.0, None).astype(np.float32)


def he_tile(size: int = 256, seed: int = 0) -> np.ndarray:
    """An H&E-stained-tissue-like RGB tile.

    Returns (Y, X, 3) uint8: pink eosin stroma with fibrous texture, purple
    haematoxylin nuclei (ellipses 3-7 px with chromatin texture, denser in
    clusters), and white background gaps (slide glass, ~245) covering ~15 %.
    """
    _check_shape(size=size, slices=1)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    # Stroma: pink with anisotropic streaks (fibres) and low-frequency stain variation.
    fibres = np.sin(0.35 * (xx + 0.6 * yy) + 4.0 * smooth_noise((1, size, size), size / 16, rng)[0])
    stain = smooth_noise((1, size, size), sigma_px=size / 8, rng=rng)[0]
    rgb = np.empty((size, size, 3), dtype=np.float32)
    pink = np.array([232.0, 160.0, 200.0])
    for c in range(3):
        rgb[..., c] = pink[c] + 10.0 * fibres * (1.0 if c else 0.6) + 14.0 * stain

    # Nuclei: dense where a smooth cluster field is high.
    cluster = smooth_noise((1, size, size), sigma_px=size / 10, rng=rng)[0]
    n_nuclei = int(size * size / 350)
    cy = rng.uniform(0, size, 4 * n_nuclei)
    cx = rng.uniform(0, size, 4 * n_nuclei)
    keep = cluster[cy.astype(int), cx.astype(int)] + rng.normal(0, 0.5, cy.size) > 0.3
    cy, cx = cy[keep][:n_nuclei], cx[keep][:n_nuclei]
    chromatin = smooth_noise((1, size, size), sigma_px=1.0, rng=rng)[0]
    nucleus = np.zeros((size, size), dtype=bool)
    for y0, x0 in zip(cy, cx, strict=True):
        ry, rx = rng.uniform(2.0, 4.5, 2)
        angle = rng.uniform(0, np.pi)
        r = int(np.ceil(max(ry, rx))) + 1
        ys = slice(max(int(y0) - r, 0), int(y0) + r + 1)
        xs = slice(max(int(x0) - r, 0), int(x0) + r + 1)
        dy, dx = yy[ys, xs] - y0, xx[ys, xs] - x0
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        nucleus[ys, xs] |= (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
    purple = np.array([95.0, 55.0, 145.0])
    for c in range(3):
        rgb[..., c] = np.where(nucleus, purple[c] + 25.0 * chromatin, rgb[..., c])

    # Background gaps: where another smooth field is high the glass shows through.
    gaps = smooth_noise((1, size, size), sigma_px=size / 12, rng=rng)[0] > 1.0
    glass = 245.0 + 3.0 * rng.standard_normal((size, size))
    rgb = np.where(gaps[..., None], glass[..., None], rgb)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def smooth_noise(
    shape: tuple[int, ...], sigma_px: float, rng: np.random.Generator
) -> np.ndarray:
    """Gaussian-filtered white noise, normalised to unit standard deviation.

    shape: (Z, Y, X); the filter acts in Y and X only (sigma_px pixels) and lightly
    along Z (one slice) so neighbouring slices are correlated but not equal.
    Returns float32 of `shape`. Filtering is done in Fourier space (numpy only).
    """
    white = rng.standard_normal(shape)
    freqs = [np.fft.fftfreq(n) for n in shape]
    sigmas = [1.0] + [sigma_px] * (len(shape) - 1)
    kernel = np.ones(shape)
    for axis, (f, s) in enumerate(zip(freqs, sigmas, strict=True)):
        k = np.exp(-2.0 * (np.pi * f * s) ** 2)
        kernel = kernel * k.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    out = np.real(np.fft.ifftn(np.fft.fftn(white) * kernel))
    std = out.std()
    return (out / std if std > 0 else out).astype(np.float32)


def _check_shape(*, size: int, slices: int) -> None:
    if size < 8:
        raise ValueError(f"phantom size must be >= 8 pixels, got {size}")
    if slices < 1:
        raise ValueError(f"phantom needs >= 1 slice, got {slices}")


def _slice_position(z: int, slices: int) -> float:
    """Slice index -> position t in [0, 1] along the phantom (0.5 for a single slice)."""
    return 0.5 if slices == 1 else z / (slices - 1)


def _ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float
) -> np.ndarray:
    """Boolean mask of an axis-aligned ellipse in normalised coordinates."""
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(Y, X) pixel-centre coordinates normalised to [-1, 1]."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(c, c, indexing="ij")


def _ct_slice(*, size: int, t: float, coarse: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """One (Y, X) CT slice at position t in [0, 1] (0 = thorax end, 1 = abdomen end)."""
    yy, xx = _grid(size)
    img = np.full((size, size), _HU_AIR, dtype=np.float32)
    body = _ellipse(yy, xx, 0.0, 0.0, 0.72, 0.92)
    inner = _ellipse(yy, xx, 0.0, 0.0, 0.64, 0.84)
    img[body] = _HU_FAT
    img[inner] = _HU_SOFT
    # Lungs shrink from thorax to abdomen; liver and kidneys grow the other way.
    # The lungs are drawn last so they sit above (anterior to) the liver dome.
    liver = _ellipse(yy, xx, 0.1, -0.38, 0.1 + 0.3 * t, 0.1 + 0.26 * t)
    img[liver & inner] = _HU_LIVER
    lung_r = 0.42 * (1.0 - 0.7 * t)
    for side in (-1.0, 1.0):
        img[_ellipse(yy, xx, -0.12, side * 0.42, lung_r * 1.1, lung_r * 0.75)] = _HU_LUNG
    kid_r = 0.04 + 0.09 * t
    for side in (-1.0, 1.0):
        img[_ellipse(yy, xx, 0.3, side * 0.3, kid_r * 1.4, kid_r)] = _HU_KIDNEY
    # Vertebra: cortical rim around cancellous core; ribs near the body wall.
    vert = _ellipse(yy, xx, 0.45, 0.0, 0.13, 0.13)
    img[vert] = _HU_CORTICAL
    img[_ellipse(yy, xx, 0.45, 0.0, 0.09, 0.09)] = _HU_CANCELLOUS
    angle = np.arctan2(yy, xx * 0.78)
    rib_ring = body & ~_ellipse(yy, xx, 0.0, 0.0, 0.6, 0.8) & inner
    ribs = rib_ring & (np.cos(7.0 * angle + 3.0 * t) > 0.75)
    img[ribs] = 850.0
    # Texture: stronger in lung (parenchyma/vessels) than in soft tissue; none in air.
    amp = np.where(img == _HU_LUNG, 40.0, np.where(img > 500, 60.0, 15.0))
    tex = amp * (0.7 * coarse + 0.3 * fine)
    return np.where(body, img + tex, img).astype(np.float32)


def _pet_slice(*, size: int, t: float, lesions: np.ndarray) -> np.ndarray:
    """One (Y, X) PET slice at position t in [0, 1]; lesions: rows (cy, cx, ct, r, uptake)."""
    yy, xx = _grid(size)
    img = np.zeros((size, size), dtype=np.float32)
    body = _ellipse(yy, xx, 0.0, 0.0, 0.7, 0.9)
    img[body] = 1.0
    img[_ellipse(yy, xx, -0.1, 0.4, 0.3, 0.22) & body] = 0.3  # lung: low uptake
    img[_ellipse(yy, xx, 0.05, -0.4, 0.18 + 0.15 * t, 0.15 + 0.12 * t)] = 3.0  # liver
    heart_r = 0.2 * (1.0 - t)
    if heart_r > 0.03:
        ring = _ellipse(yy, xx, -0.15, 0.1, heart_r, heart_r) & ~_ellipse(
            yy, xx, -0.15, 0.1, 0.6 * heart_r, 0.6 * heart_r
        )
        img[ring] = 6.0
    kid_r = 0.03 + 0.07 * t
    for side in (-1.0, 1.0):
        img[_ellipse(yy, xx, 0.35, side * 0.3, kid_r * 1.4, kid_r)] = 4.0
    for cy, cx, ct, r, uptake in lesions:
        # A lesion is a sphere: its in-plane radius shrinks away from its centre slice.
        rz = r * 4.0
        if abs(t - ct) < rz:
            rr = r * np.sqrt(1.0 - ((t - ct) / rz) ** 2)
            img[_ellipse(yy, xx, cy, cx, rr, rr) & body] = uptake
    return img
