"""`make demo`: restore every bundled example with the shipped default weights.

    python examples/demo.py            # outputs and PNGs in examples/out/ (git-ignored)
    python examples/demo.py --figures examples/figures   # refresh the README's figures

- ct_series/ (1/4-dose chest CT, DICOM) -> `rat denoise`, task ct, weights rat-ct
- pet.nii.gz (1/4-count pelvis PET)     -> `rat denoise`, task pet, weights rat-pet
- he_tissue.tif (real H&E, pyramidal)  -> `rat sr --scale 2`, weights rat-sr-x2
- ct_series/IM0001.dcm                   -> `rat regions`: LiteMedSAM region map + overlay

Each goes through the public API (`ratcli.api.restore_path`, the code path of the CLI)
with the classical region partitioner, the one the shipped models were trained with.
Outputs go to examples/out/ and each example also gets one before/after PNG in
examples/out/figures/; both are git-ignored, so `make demo` leaves the checkout as it was
(the inputs are never touched). The committed figures in examples/figures/, which the
README shows, are rewritten only when asked for with `--figures examples/figures`: a
rerun elsewhere can change a few pixels of a PNG, and rewriting them on every demo run
would dirty the tree without a real change.

ct_series/ (3 slices of 512x512) and pet.nii.gz (24 x 96 x 96) are excerpts of real
scans at a simulated 1/4 dose, he_tissue.tif (550 x 550 at 0.454 um/px) real H&E tissue
from OpenSlide's OS-1 test slide at half its scanned resolution (examples/README.md).
On 2 idle cores with an empty region-map cache (2026-12-07) the CT series took 4.5 s, the
PET 1.6 s, the H&E slide 9.0 s and the LiteMedSAM region map 4.3 s (20 s in all).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ratcli.api import restore_path
from ratcli.io import read
from ratcli.regions import make_partitioner
from ratcli.regions.run import regions_many
from ratcli.training.figure import save_figure
from ratcli.training.metrics import CT_DISPLAY_WINDOW

__all__ = ["EXAMPLES", "run_demo", "main"]

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Example:
    """One bundled input: file or folder name, output name, API options, figure kind."""

    name: str
    output: str
    options: dict
    kind: str  # "ct" | "pet" | "slide"


EXAMPLES = (
    Example("ct_series", "ct_series", {"mode": "denoise", "task": "ct"}, "ct"),
    Example("pet.nii.gz", "pet.nii.gz", {"mode": "denoise", "task": "pet"}, "pet"),
    Example("he_tissue.tif", "he_tissue-x2.tif", {"mode": "sr", "scale": 2}, "slide"),
)


def run_demo(out: Path = HERE / "out", figures: Path = HERE / "out" / "figures"
             ) -> list[dict]:
    """Restore each example into `out`, draw its PNG into `figures`; one record each
    (input, output, figure, seconds)."""
    figures.mkdir(parents=True, exist_ok=True)
    partitioner = make_partitioner("classical", cache=False)
    records = []
    for ex in EXAMPLES:
        src, dst = HERE / ex.name, out / ex.output
        t0 = time.perf_counter()
        restore_path(src, dst, overwrite=True, partitioner=partitioner, **ex.options)
        seconds = time.perf_counter() - t0
        fig = figures / f"{Path(ex.output).name.split('.')[0]}.png"
        _FIGURES[ex.kind](src, dst, fig)
        records.append({"input": str(src), "output": str(dst), "figure": str(fig),
                        "seconds": round(seconds, 1)})
    # the region maps RAT attends within, as `rat regions --overlay` draws them (auto:
    # LiteMedSAM; the restores above use classical maps, which the shipped models learned on)
    t0 = time.perf_counter()
    src, dst = HERE / "ct_series" / "IM0001.dcm", out / "ct_series-regions.nii.gz"
    fig = figures / "ct_series-regions.png"
    for res in regions_many([src], dst, partitioner=make_partitioner(), overlay=fig,
                            overwrite=True, raise_errors=True):
        records.append({"input": str(src), "output": res.output, "figure": str(fig),
                        "seconds": round(time.perf_counter() - t0, 1)})
    return records


def _volume_figure(src: Path, dst: Path, fig: Path, *, window: tuple[float, float],
                   label: str) -> None:
    """Middle slice: before | after | |before - after| (what the model removed)."""
    before, after = read(src).array, read(dst).array
    z = before.shape[0] // 2
    removed = np.abs(before[z] - after[z])
    panels = {"before": before[z], f"after ({label})": after[z], "|err| removed": removed}
    lo, hi = window
    save_figure(fig, [(f"slice {z}", panels)], window=(lo, hi), error_top=(hi - lo) / 4)


def _ct_figure(src: Path, dst: Path, fig: Path) -> None:
    _volume_figure(src, dst, fig, window=CT_DISPLAY_WINDOW, label="rat-ct")


def _pet_figure(src: Path, dst: Path, fig: Path) -> None:
    """Window 0 to 3x the median body activity (restored voxels above 1 % of the
    maximum), as PET is read: tissue with normal uptake shows, the bladder saturates."""
    after = read(dst).array
    top = 3.0 * float(np.median(after[after > 0.01 * after.max()]))
    _volume_figure(src, dst, fig, window=(0.0, top), label="rat-pet")


def _slide_figure(src: Path, dst: Path, fig: Path, *, crop: int = 96) -> None:
    """A crop rich in nuclei: input (pixels enlarged) | bicubic x2 | rat-sr-x2."""
    from ratcli.tasks import get_task
    from ratcli.training.baselines import run_baseline

    before, after = read(src).array[0], read(dst).array[0]
    y, x = _nuclei_corner(before, crop)
    low = before[y : y + crop, x : x + crop]
    high = after[2 * y : 2 * (y + crop), 2 * x : 2 * (x + crop)]
    bicubic = run_baseline("bicubic", low[None], task=get_task("sr-x2"))[0]
    panels = {"before (input pixels)": low, "bicubic x2": bicubic, "after (rat-sr-x2)": high}
    save_figure(fig, [(f"crop y{y} x{x}", panels)], window=None, error_top=64.0)


def _nuclei_corner(rgb: np.ndarray, crop: int) -> tuple[int, int]:
    """Top-left corner (on a half-crop grid) of the crop with the most nucleus-dark
    pixels (mean RGB below 120): where super-resolution has edges to show."""
    dark = rgb.mean(-1) < 120
    H, W = dark.shape
    best, corner = -1.0, (0, 0)
    for y in range(0, H - crop + 1, crop // 2):
        for x in range(0, W - crop + 1, crop // 2):
            score = float(dark[y : y + crop, x : x + crop].mean())
            if score > best:
                best, corner = score, (y, x)
    return corner


_FIGURES = {"ct": _ct_figure, "pet": _pet_figure, "slide": _slide_figure}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "out", help="restored outputs")
    parser.add_argument("--figures", type=Path, default=HERE / "out" / "figures",
                        help="before/after PNGs (examples/figures: the README's)")
    args = parser.parse_args(argv)
    return run_demo(args.out, args.figures)


if __name__ == "__main__":
    t0 = time.perf_counter()
    for rec in main():
        print(f"{rec['input']} -> {rec['output']} ({rec['seconds']} s); figure {rec['figure']}")
    print(f"demo done in {time.perf_counter() - t0:.0f} s")
