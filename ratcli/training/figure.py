"""The evaluation figure: one row per image, columns input / outputs / target / error maps.

Drawn with Pillow (no plotting library needed). Greyscale panels use a stated display
window (CT: the soft-tissue window; PET: 0 to the target's maximum); error maps show
|output - target| on a black-to-yellow scale whose top is printed in the column title.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["FigureRow", "save_figure"]

FigureRow = dict[str, np.ndarray]  # column title -> (H, W) float or (H, W, 3) uint8 panel

_TITLE_H = 14
_GAP = 4
_MIN_EDGE = 160  # small panels are enlarged (nearest neighbour) to at least this edge


def save_figure(
    path: str | Path,
    rows: list[tuple[str, FigureRow]],
    *,
    window: tuple[float, float] | None,
    error_top: float,
) -> Path:
    """Write a PNG grid to `path`.

    rows: (row label, {column title: panel}); every row has the same columns in the same
    order; panels whose title starts with "|err|" are error maps. window: greyscale
    display range (None: each row's target min..max). error_top: value shown as full
    yellow in error maps. Returns `path`.
    """
    from PIL import Image as PILImage
    from PIL import ImageDraw

    titles = list(rows[0][1])
    H, W = _panel_size(rows)
    zoom = max(1, -(-_MIN_EDGE // max(H, W)))
    ph, pw = H * zoom, W * zoom
    canvas = PILImage.new("RGB", (len(titles) * (pw + _GAP) + _GAP,
                                  len(rows) * (ph + _TITLE_H + _GAP) + _GAP), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, panels) in enumerate(rows):
        y0 = _GAP + r * (ph + _TITLE_H + _GAP)
        lo, hi = window if window is not None else _target_range(panels)
        for c, title in enumerate(titles):
            x0 = _GAP + c * (pw + _GAP)
            draw.text((x0, y0), f"{label}: {title}" if c == 0 else title, fill="black")
            panel = panels[title]
            err = title.startswith("|err|")
            rgb = _heat(panel, error_top) if err else _grey(panel, lo, hi)
            rgb = _fit(rgb, H, W).repeat(zoom, 0).repeat(zoom, 1)
            canvas.paste(PILImage.fromarray(rgb), (x0, y0 + _TITLE_H))
    path = Path(path)
    canvas.save(path, format="PNG")
    return path


def _panel_size(rows: list[tuple[str, FigureRow]]) -> tuple[int, int]:
    """The largest panel (H, W) over all rows (smaller panels are enlarged to it)."""
    shapes = [p.shape[:2] for _, panels in rows for p in panels.values()]
    return max(s[0] for s in shapes), max(s[1] for s in shapes)


def _target_range(panels: FigureRow) -> tuple[float, float]:
    target = next((p for t, p in panels.items() if t == "target"), None)
    ref = target if target is not None else next(iter(panels.values()))
    lo, hi = float(np.min(ref)), float(np.max(ref))
    return lo, (hi if hi > lo else lo + 1.0)


def _grey(panel: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W) float -> (H, W, 3) uint8 through the window; RGB uint8 passes through."""
    if panel.ndim == 3:
        return panel.astype(np.uint8)
    g = np.clip((panel.astype(np.float64) - lo) / (hi - lo), 0, 1)
    return np.repeat((g * 255).round().astype(np.uint8)[..., None], 3, axis=-1)


def _heat(err: np.ndarray, top: float) -> np.ndarray:
    """|error| (H, W[, 3]) -> black-red-yellow (H, W, 3) uint8; `top` and above = yellow."""
    e = err.astype(np.float64)
    if e.ndim == 3:
        e = e.mean(-1)
    t = np.clip(e / max(top, 1e-12), 0, 1)
    rgb = np.stack([np.clip(2 * t, 0, 1), np.clip(2 * t - 1, 0, 1), np.zeros_like(t)], -1)
    return (rgb * 255).round().astype(np.uint8)


def _fit(rgb: np.ndarray, H: int, W: int) -> np.ndarray:
    """Enlarge a smaller panel (an SR input) to (H, W) by nearest neighbour."""
    h, w = rgb.shape[:2]
    if (h, w) == (H, W):
        return rgb
    rows = (np.arange(H) * h // H).clip(0, h - 1)
    cols = (np.arange(W) * w // W).clip(0, w - 1)
    return rgb[rows][:, cols]
