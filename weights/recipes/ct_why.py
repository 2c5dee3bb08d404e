"""Why rat-ct beats BM3D on body CT but loses on a head (issue 22, item 1).

    OMP_NUM_THREADS=1 nice -n 5 python weights/recipes/ct_why.py ../shared/data runs/why \
        [--weights weights/rat-ct.pt] [--parts a,b,c,d,g]

Separates the factors on real scans of shared/data (public sources in its README):
the InVesalius 0051 head CT (Siemens, 0.479 mm; issue 22 looked at this scan for the
diagnosis, it goes to the next CT test split), the TotalSegmentator Biograph mCT contrast
abdomen (0.977 mm), and for the input statistics the two rat-ct training scans (LIDC-IDRI
0314 chest, ITKElastix body). Low dose is `LowDoseCT` (projection domain, parallel beam,
360 views) on the whole slice at its pixel size; the photons per ray are set from one
calibration run per scan, filter and pixel size so that the noise std (std of input -
target over body pixels, HU > -500, of the scored box) hits each level.

  (a) noise: levels 10, 20, 40, 80, 130 HU, ramp filter, head and abdomen (3 slices each);
  (b) pixel size, at 20 and 40 HU: the head 2x2-averaged to 0.957 mm (whole head
      scored, as native); the abdomen's central 250 mm simulated as its own object at
      0.977 mm ("abdomen-crop") and upsampled x2 to 0.488 mm ("abdomen-0.49"), both
      scored on the central 125 mm, as is the whole-body abdomen for comparison. The crop
      has no arms or wide body outline: its noise has no streaks, so crop vs whole body
      is the noise texture at equal anatomy, pixel size and noise std;
  (c) input normalisation: RATConfig's affine and detail channels (input_shift, gain,
      detail) on head, abdomen and training slices (training doses 1/16..1/2 of 1e6
      photons, ramp / Hann; noise std scaled as 1/sqrt(dose) from the 1/4-dose run);
  (g) (tables: "(c')") the noise amplitude alone: the same inputs with their fine detail
      (noise and fine anatomy) amplified k = 2, 4 times before the model, scaled back
      after;
  (d) kernel: Hann at 20 and 40 HU, against (a)'s ramp at the same noise std;
  (e) where the error is: RMSE per mask of the clean slice (soft-tissue interior = brain
      on the head, bone and edges, other body, air), the low-frequency part of the
      interior error (Gaussian 1.5 mm low-pass), and the share of the added noise that
      passes into the output in the interior ("noise kept": the error regressed on the
      noise; 1 = input, 0 = all removed): the "mottled grain".

Methods: the input, BM3D with the true sigma (`baselines.run_baseline`), TV with the best
weight from a grid (`oracle.run_best("tv-best")`, per slice against the target), and
the model through `ratcli.api.Session` (`--regions classical`, as the checkpoint
records; tile 512, as `rat denoise`). The denoisers run on a box around the scored
region (16 px margin); the model on the whole slice. Each case is cached in
OUT/cases/*.npz; tables go to OUT/tables.md and OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ratcli.io import Image, read
from ratcli.tasks import TASKS
from ratcli.training.baselines import run_baseline
from ratcli.training.degrade import LowDoseCT

SCANS = {"head": "ct/invesalius-0051-head.nii.gz",
         "abdomen": "ct/totalsegmentator-biograph-mct-abdomen.nii.gz"}
TRAIN = {"lidc": "ct/lidc-idri-0314-chest-2mm.nii.gz", "itkelastix": "ct/itkelastix-00-body.nii.gz"}
SLICES = {"head": (46, 58, 70), "abdomen": (4, 10, 16)}
TRAIN_SLICES = {"lidc": (40, 90), "itkelastix": (50, 100)}
LEVELS = (10, 20, 40, 80, 130)  # target noise std, HU
MATCHED = (20, 40)  # levels for the pixel-size and kernel comparisons
TRAIN_DOSES = (1 / 16, 1 / 4, 1 / 2)
MARGIN = 16
WINDOWS = {"head": (0.0, 80.0), "abdomen": (-160.0, 240.0)}  # W80/L40, W400/L40
CT = TASKS["ct"]
HU_RANGE = 4096.0


@dataclass(frozen=True)
class Variant:
    """A scan at one pixel size (make_slice builds it from the native slice)."""

    name: str
    scan: str
    box: int  # edge of the scored box, px


VARIANTS = {
    "head": Variant("head", "head", 416),  # the whole head, 199 mm
    "head-0.96": Variant("head-0.96", "head", 208),  # the same region
    "abdomen": Variant("abdomen", "abdomen", 256),  # 250 mm around the body's centre
    "abdomen-0.49": Variant("abdomen-0.49", "abdomen", 256),  # its central 125 mm
    "abdomen-crop": Variant("abdomen-crop", "abdomen", 128),  # the same, at 0.98 mm
}


def head_centre(clean: np.ndarray) -> tuple[int, int]:
    """Centre of the bounding box of the largest body component (the head holder's thin
    arc is opened away)."""
    body = ndi.binary_opening(clean > -500, iterations=4)
    lab, n = ndi.label(body)
    big = np.argmax(np.bincount(lab.ravel())[1:]) + 1 if n else 0
    ys, xs = np.nonzero(lab == big)
    return (int(ys.min() + ys.max()) // 2, int(xs.min() + xs.max()) // 2)


def box_at(centre: tuple[int, int], size: int, shape: tuple[int, int]) -> tuple[int, int, int]:
    y = min(max(centre[0] - size // 2, 0), shape[0] - size)
    x = min(max(centre[1] - size // 2, 0), shape[1] - size)
    return y, x, size


def make_slice(v: Variant, native: np.ndarray, px: float) -> tuple[np.ndarray, float,
                                                                    tuple[int, int, int]]:
    """(clean HU slice the simulator sees, its pixel mm, scored box (y, x, size))."""
    c = head_centre(native)
    if v.name == "head":
        return native, px, box_at(c, v.box, native.shape)
    if v.name == "head-0.96":  # 2x2 mean: the same head at twice the pixel size
        h, w = native.shape[0] // 2 * 2, native.shape[1] // 2 * 2
        small = native[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3))
        return small, 2 * px, box_at((c[0] // 2, c[1] // 2), v.box, small.shape)
    if v.name == "abdomen":
        return native, px, box_at(c, v.box, native.shape)
    # abdomen-0.49: the native scored box (250 mm) upsampled x2 (cubic) is the object;
    # scored on its central 256 px (125 mm), the native box's central 128 px.
    # abdomen-crop: the same object at the native pixel size (no arms, no body outline:
    # it separates the pixel size from the noise texture of the whole-body simulation)
    y, x, s = box_at(c, 256, native.shape)
    if v.name == "abdomen-crop":
        return native[y:y + s, x:x + s].copy(), px, box_at((128, 128), v.box, (s, s))
    big = ndi.zoom(native[y:y + s, x:x + s].astype(np.float64), 2, order=3)
    big = np.clip(big, -1024, 3071).astype(np.float32)
    return big, px / 2, box_at((256, 256), v.box, big.shape)


def crop(a: np.ndarray, box: tuple[int, int, int], margin: int = 0) -> np.ndarray:
    y, x, s = box
    y0, x0 = max(y - margin, 0), max(x - margin, 0)
    return a[y0:y + s + margin, x0:x + s + margin]


def inner(box: tuple[int, int, int], shape: tuple[int, int]) -> tuple[int, int, int]:
    """The scored box inside the denoisers' crop (box + margin, clipped to the image)."""
    y, x, s = box
    return min(y, MARGIN), min(x, MARGIN), s


def noise_std(low: np.ndarray, clean: np.ndarray) -> float:
    body = clean > -500
    return float(np.std((low - clean)[body]))


def seed_of(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


class Lab:
    """Scans, the model and the per-case cache."""

    def __init__(self, shared: Path, out: Path, weights: str) -> None:
        from ratcli.api import Session

        self.shared, self.out = shared, out
        (out / "cases").mkdir(parents=True, exist_ok=True)
        self.images = {k: read(shared / p) for k, p in SCANS.items()}
        self.session = Session(task="ct", weights=weights, partitioner="classical",
                               device="cpu", threads=1)
        self.restorer = self.session.restorer(CT)[0]
        self.calib: dict[str, float] = {}
        cal = out / "calibration.json"
        if cal.exists():
            self.calib = json.loads(cal.read_text())

    def slice(self, vname: str, z: int) -> tuple[np.ndarray, float, tuple[int, int, int]]:
        v = VARIANTS[vname]
        im = self.images[v.scan]
        return make_slice(v, im.array[z].astype(np.float32), float(im.spacing[0]))

    def photons(self, vname: str, filt: str, level: float) -> float:
        """Photons per ray (dose 1) giving noise std `level` HU in the scored box,
        from one run at 1e6 photons on the scan's middle slice (std ~ 1/sqrt(photons))."""
        key = f"{vname}/{filt}"
        if key not in self.calib:
            z = SLICES[VARIANTS[vname].scan][1]
            clean, px, box = self.slice(vname, z)
            sim = LowDoseCT(dose=1.0, photons=1e6, filter_name=filt, pixel_mm=px)
            low = sim(clean, np.random.default_rng(seed_of("calib", key)))
            self.calib[key] = noise_std(crop(low, box), crop(clean, box))
            (self.out / "calibration.json").write_text(json.dumps(self.calib, indent=1))
        return 1e6 * (self.calib[key] / level) ** 2

    def case(self, vname: str, filt: str, level: float, z: int) -> dict[str, np.ndarray]:
        """Simulate, denoise and cache one slice; arrays on the denoisers' crop."""
        path = self.out / "cases" / f"{vname}_{filt}_{level:g}_{z}.npz"
        if path.exists():
            res = dict(np.load(path))
            if "tv_best" not in res:  # cases cached before the library had tv-best
                res["tv_best"], res["tv_f"] = tv_best(res["input"], res["clean"])
                np.savez_compressed(path, **res)
            res["tv"] = res["tv_best"]
            return res
        t0 = time.time()
        clean, px, box = self.slice(vname, z)
        photons = self.photons(vname, filt, level)
        sim = LowDoseCT(dose=1.0, photons=photons, filter_name=filt, pixel_mm=px)
        low = sim(clean, np.random.default_rng(seed_of(vname, filt, level, z)))
        rat = self.restorer.restore(Image(low[None], spacing=(px, px, 1.0), modality="CT"))
        c_clean, c_low = crop(clean, box, MARGIN), crop(low, box, MARGIN)
        bm3d = run_baseline("bm3d", c_low[None], task=CT, target=c_clean[None])[0]
        ib = inner(box, clean.shape)
        tv, tv_f = tv_best(c_low, c_clean)
        res = {"clean": c_clean, "input": c_low, "bm3d": bm3d, "tv_best": tv,
               "rat": crop(rat.array[0], box, MARGIN), "box": np.array(ib),
               "px": np.array(px), "photons": np.array(photons), "tv_f": np.array(tv_f),
               "noise": np.array(noise_std(crop(low, box), crop(clean, box)))}
        np.savez_compressed(path, **res)
        print(f"  {path.name}: {time.time() - t0:.0f} s, noise {float(res['noise']):.1f} HU",
              flush=True)
        res["tv"] = tv
        return res


def tv_best(low: np.ndarray, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The library's oracle TV (`oracle.run_best("tv-best")`: weight = m x true sigma,
    m in 0.25..4, the best per slice against the target); (output, chosen m)."""
    from ratcli.training.oracle import run_best

    choice = run_best("tv-best", low[None], task=CT, target=clean[None])
    return choice.output[0], np.array(choice.values[0])


def sub(a: np.ndarray, ib: tuple[int, int, int] | np.ndarray) -> np.ndarray:
    y, x, s = (int(v) for v in ib)
    return a[y:y + s, x:x + s]


def psnr(x: np.ndarray, t: np.ndarray, data_range: float,
         window: tuple[float, float] | None = None) -> float:
    if window is not None:
        x, t = np.clip(x, *window), np.clip(t, *window)
    mse = float(np.mean((x.astype(np.float64) - t) ** 2))
    return 10 * np.log10(data_range ** 2 / max(mse, 1e-12))


def masks(clean: np.ndarray, px: float) -> dict[str, np.ndarray]:
    """Regions of the clean slice: soft-tissue interior (>= 3 mm from bone, air and
    strong edges: the brain on a head), bone and edges (within 1.5 mm of bone > 250 HU
    or of a gradient > 30 HU/mm), air (< -500 HU), other body."""
    c = clean.astype(np.float64)
    bone, air = c > 250, c < -500
    grad = ndi.gaussian_gradient_magnitude(c, 1.0) / px
    edge = bone | (grad > 30) | (air & ~ndi.binary_erosion(air, iterations=1))
    d_edge = ndi.distance_transform_edt(~edge) * px
    d_out = ndi.distance_transform_edt(~(bone | air)) * px
    soft = (c >= -150) & (c <= 250)
    interior = soft & (d_out >= 3.0) & (d_edge >= 3.0)
    near = (d_edge <= 1.5) & ~air
    return {"interior": interior, "bone+edges": near & ~interior,
            "other body": ~air & ~interior & ~near, "air": air & ~near}


METHODS = ("input", "bm3d", "tv", "rat")


def metrics(res: dict[str, np.ndarray], window: tuple[float, float],
            ib: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    ib = res["box"] if ib is None else ib
    clean = sub(res["clean"], ib)
    m = masks(clean, float(res["px"]))
    px = float(res["px"])
    out: dict[str, dict[str, float]] = {}
    for k in METHODS:
        x = sub(res[k], ib)
        err = x.astype(np.float64) - clean
        low = ndi.gaussian_filter(err, 1.5 / px)
        row = {"psnr": psnr(x, clean, HU_RANGE),
               "psnr_win": psnr(x, clean, window[1] - window[0], window)}
        for name, mk in m.items():
            row[f"rmse {name}"] = float(np.sqrt(np.mean(err[mk] ** 2))) if mk.any() else np.nan
        ii = m["interior"]
        # the share of the added noise that passes through: err regressed on the noise
        noise = (sub(res["input"], ib).astype(np.float64) - clean)[ii]
        row["kept"] = float(np.dot(err[ii], noise) / max(np.dot(noise, noise), 1e-12))
        row["mottle"] = float(np.sqrt(np.mean(low[ii] ** 2))) if ii.any() else np.nan
        row["fine"] = float(np.sqrt(np.mean((err - low)[ii] ** 2))) if ii.any() else np.nan
        out[k] = row
    return out


# -- (c) the model's input channels ------------------------------------------------------


def input_channels(hu: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray]:
    """The affine and detail channels RegionAttentionTransformer.forward computes."""
    p = CT.norm_params(hu)
    n = CT.normalize(hu, p).astype(np.float64)
    affine = (n - cfg.input_shift) * cfg.input_gain
    mean = ndi.uniform_filter(n, 5, mode="mirror")  # torch's "reflect" padding
    return affine, (n - mean) * cfg.input_detail


def channel_stats(low: np.ndarray, clean: np.ndarray, px: float, cfg) -> dict[str, float]:
    """In the soft-tissue interior: the affine channel's median, the detail channel's
    std, split into anatomy (clean) and noise (input - clean) parts, and its 99th
    percentile of |detail|."""
    ii = masks(clean, px)["interior"]
    a_low, d_low = input_channels(low, cfg)
    _, d_clean = input_channels(clean, cfg)
    fine = clean - ndi.uniform_filter(clean.astype(np.float64), 5, mode="mirror")
    return {"streaks": streak_ratio(low, clean),
            "affine_median": float(np.median(a_low[ii])),
            "clean_fine_hu": float(np.std(fine[ii])),
            "detail_p50": float(np.percentile(np.abs(d_low[ii]), 50)),
            "detail_std": float(np.std(d_low[ii])),
            "detail_anatomy_std": float(np.std(d_clean[ii])),
            "detail_noise_std": float(np.std((d_low - d_clean)[ii])),
            "detail_p99": float(np.percentile(np.abs(d_low[ii]), 99)),
            "interior_frac": float(ii.mean())}


def target_grain(clean: np.ndarray, px: float) -> float:
    """The full-dose slice's own fine texture in the soft-tissue interior: std of the
    clean slice minus its 5 x 5 mean (the detail channel's band), HU."""
    c = clean.astype(np.float64)
    fine = c - ndi.uniform_filter(c, 5, mode="mirror")
    return float(np.std(fine[masks(clean, px)["interior"]]))


def streak_ratio(low: np.ndarray, clean: np.ndarray) -> float:
    """How directional the noise is: the variance of the noise averaged over 9 px along
    one image axis over that along the other (larger / smaller; 1 = isotropic noise,
    >> 1 = streaks), over body pixels >= 5 px inside."""
    n = low.astype(np.float64) - clean
    body = ndi.binary_erosion(clean > -500, iterations=5)
    vx = float(np.var(ndi.uniform_filter1d(n, 9, axis=1)[body]))
    vy = float(np.var(ndi.uniform_filter1d(n, 9, axis=0)[body]))
    return max(vx, vy) / max(min(vx, vy), 1e-12)


def training_stats(lab: Lab, cfg) -> list[dict]:
    """Training slices (rat-ct's two scans) at 1/4 dose of 1e6 photons, ramp and Hann;
    noise std at the other training doses scaled by 1/sqrt(dose)."""
    path = lab.out / "train_stats.json"
    if path.exists():
        return json.loads(path.read_text())
    rows = []
    for name, rel in TRAIN.items():
        im = read(lab.shared / rel)
        px = float(im.spacing[0])
        for z in TRAIN_SLICES[name]:
            clean = im.array[z].astype(np.float32)
            for filt in ("ramp", "hann"):
                sim = LowDoseCT(dose=0.25, photons=1e6, filter_name=filt, pixel_mm=px)
                low = sim(clean, np.random.default_rng(seed_of("train", name, z, filt)))
                st = channel_stats(low, clean, px, cfg)
                st.update(scan=name, z=z, filter=filt, px=px, noise_d4=noise_std(low, clean))
                rows.append(st)
                print(f"  train {name} z{z} {filt}: noise {st['noise_d4']:.1f} HU", flush=True)
    path.write_text(json.dumps(rows, indent=1))
    return rows


# -- (c') the noise amplitude alone: fine detail amplified k times before the model --------

GAINS = (1, 2, 4)
GAIN_LEVELS = (10, 20, 40)


def amplified_rat(lab: Lab, res: dict[str, np.ndarray], k: float) -> np.ndarray:
    """The model on the denoisers' crop with its fine detail (input minus a Gaussian
    1.5 px low-pass: noise and fine anatomy) amplified k times, and scaled back after:
    the same anatomy at k times the noise amplitude, in the model's input range."""
    x = res["input"].astype(np.float64)
    low = ndi.gaussian_filter(x, 1.5)
    xk = (low + k * (x - low)).astype(np.float32)
    px = float(res["px"])
    y = lab.restorer.restore(Image(xk[None], spacing=(px, px, 1.0), modality="CT")).array[0]
    return (low + (y - low) / k).astype(np.float32)


def gain_test(lab: Lab) -> list[dict]:
    path = lab.out / "gain.json"
    if path.exists():
        return json.loads(path.read_text())
    rows = []
    for vname in ("head", "abdomen"):
        for level in GAIN_LEVELS:
            cases = [lab.case(vname, "ramp", level, z) for z in SLICES[vname]]
            row: dict = {"variant": vname, "level": level,
                         "noise": float(np.mean([c["noise"] for c in cases]))}
            bm = [psnr(sub(c["bm3d"], c["box"]), sub(c["clean"], c["box"]), HU_RANGE)
                  for c in cases]
            row["bm3d"] = float(np.mean(bm))
            for k in GAINS:
                ps = [psnr(sub(amplified_rat(lab, c, k), c["box"]), sub(c["clean"], c["box"]),
                           HU_RANGE) for c in cases]
                row[f"k{k}"] = float(np.mean(ps))
                row[f"k{k}_minus_bm3d"] = [p - b for p, b in zip(ps, bm, strict=True)]
            print(f"  gain {vname} {level}: " + ", ".join(
                f"k{k} {row[f'k{k}'] - row['bm3d']:+.2f}" for k in GAINS), flush=True)
            rows.append(row)
    path.write_text(json.dumps(rows, indent=1))
    return rows


def fmt_gain(rows: list[dict]) -> str:
    s = ["#### (c') the same slices with the fine detail amplified k times before rat-ct "
         "(model on the crop; PSNR HU)", "",
         "| scan | noise std (HU) | BM3D | " + " | ".join(f"rat k={k}" for k in GAINS)
         + " | " + " | ".join(f"k={k} - BM3D" for k in GAINS) + " |",
         "|---|---:|---:|" + "---:|" * (2 * len(GAINS))]
    for r in rows:
        s.append(f"| {r['variant']} | {r['noise']:.1f} | {r['bm3d']:.2f} | "
                 + " | ".join(f"{r[f'k{k}']:.2f}" for k in GAINS) + " | "
                 + " | ".join(f"{r[f'k{k}'] - r['bm3d']:+.2f}" for k in GAINS) + " |")
    return "\n".join(s)


# -- tables ---------------------------------------------------------------------------------


def mean_rows(rows: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {k: {m: float(np.mean([r[k][m] for r in rows])) for m in rows[0][k]}
            for k in rows[0]}


def sweep(lab: Lab, vname: str, filt: str, levels: tuple[int, ...], window_of: str,
          ib_native: bool = False) -> list[dict]:
    out = []
    for level in levels:
        cases = [lab.case(vname, filt, level, z) for z in SLICES[VARIANTS[vname].scan]]
        per = [metrics(c, WINDOWS[window_of]) for c in cases]
        diffs = [p["rat"]["psnr"] - p["bm3d"]["psnr"] for p in per]
        out.append({"variant": vname, "filter": filt, "level": level,
                    "noise": float(np.mean([c["noise"] for c in cases])),
                    "streaks": float(np.mean([streak_ratio(sub(c["input"], c["box"]),
                                                           sub(c["clean"], c["box"]))
                                              for c in cases])),
                    "grain": float(np.mean([target_grain(sub(c["clean"], c["box"]),
                                                         float(c["px"])) for c in cases])),
                    "photons": float(cases[0]["photons"]),
                    "tv_f": [float(c["tv_f"]) for c in cases],
                    "m": mean_rows(per), "rat_minus_bm3d": diffs})
    return out


def fmt_sweep(rows: list[dict], title: str) -> str:
    s = [f"#### {title}", "",
         "| scan | filter | noise std (HU) | streak ratio | target grain (HU) | photons/ray "
         "| input | BM3D | TV best | rat-ct | rat - BM3D (per slice) | rat - TV "
         "| window: BM3D | TV | rat | rat - BM3D | noise kept: BM3D / TV / rat |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        m = r["m"]
        per = ", ".join(f"{d:+.2f}" for d in r["rat_minus_bm3d"])
        dw = m["rat"]["psnr_win"] - m["bm3d"]["psnr_win"]
        s.append(f"| {r['variant']} | {r['filter']} | {r['noise']:.1f} | {r['streaks']:.1f} "
                 f"| {r['grain']:.1f} | {r['photons']:.2g} "
                 f"| {m['input']['psnr']:.2f} | {m['bm3d']['psnr']:.2f} | {m['tv']['psnr']:.2f} "
                 f"| {m['rat']['psnr']:.2f} | **{m['rat']['psnr'] - m['bm3d']['psnr']:+.2f}** "
                 f"({per}) | {m['rat']['psnr'] - m['tv']['psnr']:+.2f} "
                 f"| {m['bm3d']['psnr_win']:.2f} | {m['tv']['psnr_win']:.2f} "
                 f"| {m['rat']['psnr_win']:.2f} | {dw:+.2f} "
                 f"| {m['bm3d']['kept']:.2f} / {m['tv']['kept']:.2f} / {m['rat']['kept']:.2f} |")
    return "\n".join(s)


def fmt_masks(rows: list[dict], title: str) -> str:
    keys = ("interior", "bone+edges", "other body", "air")
    s = [f"#### {title}", "",
         "| scan | noise std | method | " + " | ".join(f"RMSE {k}" for k in keys)
         + " | interior low-pass (mottle) | interior fine | noise kept in interior |",
         "|---|---:|---|" + "---:|" * (len(keys) + 3)]
    for r in rows:
        for k in ("input", "bm3d", "tv", "rat"):
            m = r["m"][k]
            s.append(f"| {r['variant']} | {r['noise']:.0f} | {k} | "
                     + " | ".join(f"{m['rmse ' + q]:.1f}" for q in keys)
                     + f" | {m['mottle']:.1f} | {m['fine']:.1f} | {m['kept']:.2f} |")
    return "\n".join(s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shared", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--weights", default="weights/rat-ct.pt")
    ap.add_argument("--parts", default="a,b,c,d,g")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    lab = Lab(args.shared, args.out, args.weights)
    cfg = lab.session._checkpoint(args.weights).config
    res: dict = {"config": {"input_shift": cfg.input_shift, "input_gain": cfg.input_gain,
                            "input_detail": cfg.input_detail}}
    md: list[str] = []
    if "a" in parts:
        res["a"] = sweep(lab, "head", "ramp", LEVELS, "head") + \
            sweep(lab, "abdomen", "ramp", LEVELS, "abdomen")
        md += [fmt_sweep(res["a"], "(a) noise sweep, ramp"),
               fmt_masks(res["a"], "(e) error per region (HU), ramp")]
    if "b" in parts:
        res["b"] = pixel_size(lab)
        md.append(fmt_sweep(res["b"], "(b) pixel size at matched noise, ramp"))
    if "d" in parts:
        res["d"] = sweep(lab, "head", "hann", MATCHED, "head") + \
            sweep(lab, "abdomen", "hann", MATCHED, "abdomen")
        md += [fmt_sweep(res["d"], "(d) Hann kernel at matched noise"),
               fmt_masks(res["d"], "(e) error per region (HU), Hann")]
    if "c" in parts:
        res["c"] = channels(lab, cfg)
        md.append(fmt_channels(res["c"]))
    if "g" in parts:
        res["g"] = gain_test(lab)
        md.append(fmt_gain(res["g"]))
    (args.out / "results.json").write_text(json.dumps(res, indent=1))
    (args.out / "tables.md").write_text("\n\n".join(md) + "\n")
    print("\n\n".join(md))


def pixel_size(lab: Lab) -> list[dict]:
    """Resampled head and abdomen; native rows re-scored on the same physical region."""
    rows = sweep(lab, "head-0.96", "ramp", MATCHED, "head")
    rows += sweep(lab, "abdomen-0.49", "ramp", MATCHED, "abdomen")
    rows += sweep(lab, "abdomen-crop", "ramp", MATCHED, "abdomen")
    for level in MATCHED:  # native abdomen on the central 125 mm (its box's central 128 px)
        cases = [lab.case("abdomen", "ramp", level, z) for z in SLICES["abdomen"]]
        boxes = [np.array([int(c["box"][0]) + 64, int(c["box"][1]) + 64, 128]) for c in cases]
        per = [metrics(c, WINDOWS["abdomen"], b) for c, b in zip(cases, boxes, strict=True)]
        rows.append({"variant": "abdomen (central 125 mm)", "filter": "ramp", "level": level,
                     "noise": float(np.mean([c["noise"] for c in cases])),
                     "streaks": float(np.mean([streak_ratio(sub(c["input"], b), sub(c["clean"], b))
                                               for c, b in zip(cases, boxes, strict=True)])),
                     "grain": float(np.mean([target_grain(sub(c["clean"], b), float(c["px"]))
                                             for c, b in zip(cases, boxes, strict=True)])),
                     "photons": float(cases[0]["photons"]), "tv_f": [], "m": mean_rows(per),
                     "rat_minus_bm3d": [p["rat"]["psnr"] - p["bm3d"]["psnr"] for p in per]})
    return rows


def channels(lab: Lab, cfg) -> dict:
    train = training_stats(lab, cfg)
    scans = []
    for vname, filt in (("head", "ramp"), ("abdomen", "ramp"), ("head", "hann"),
                        ("abdomen", "hann")):
        levels = LEVELS if filt == "ramp" else MATCHED
        for level in levels:
            sts = []
            for z in SLICES[vname]:
                c = lab.case(vname, filt, level, z)
                ib = c["box"]
                sts.append(channel_stats(sub(c["input"], ib), sub(c["clean"], ib),
                                         float(c["px"]), cfg))
            row = {k: float(np.mean([s[k] for s in sts])) for k in sts[0]}
            row.update(scan=vname, filter=filt, level=level)
            scans.append(row)
    return {"train": train, "scans": scans}


def fmt_channels(c: dict) -> str:
    s = ["#### (c) the model's input channels in the soft-tissue interior", "",
         "| slices | filter | noise std (HU) | affine channel, median | clean fine std (HU) "
         "| detail channel std: anatomy | noise | \\|detail\\| p50 | p99 | interior fraction "
         "| noise streak ratio |",
         "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for filt in ("ramp", "hann"):
        rows = [r for r in c["train"] if r["filter"] == filt]
        n4 = np.array([r["noise_d4"] for r in rows])
        dn = np.array([r["detail_noise_std"] for r in rows])
        lo, hi = np.sqrt(0.25 / TRAIN_DOSES[-1]), np.sqrt(0.25 / TRAIN_DOSES[0])

        def avg(key: str, rows: list[dict] = rows) -> float:
            return float(np.mean([r[key] for r in rows]))

        s.append(f"| training ({len(rows)} slices), dose 1/16..1/2 (p50, p99 at 1/4) | {filt} "
                 f"| {n4.min() * lo:.0f}..{n4.max() * hi:.0f} | {avg('affine_median'):.3f} "
                 f"| {avg('clean_fine_hu'):.1f} | {avg('detail_anatomy_std'):.3f} "
                 f"| {dn.min() * lo:.2f}..{dn.max() * hi:.2f} | {avg('detail_p50'):.2f} "
                 f"| {avg('detail_p99'):.2f} | {avg('interior_frac'):.2f} "
                 f"| {min(r['streaks'] for r in rows):.1f}.."
                 f"{max(r['streaks'] for r in rows):.1f} |")
    for r in c["scans"]:
        s.append(f"| {r['scan']} | {r['filter']} | {r['level']} | {r['affine_median']:.3f} "
                 f"| {r['clean_fine_hu']:.1f} | {r['detail_anatomy_std']:.3f} "
                 f"| {r['detail_noise_std']:.2f} | {r['detail_p50']:.2f} "
                 f"| {r['detail_p99']:.2f} | {r['interior_frac']:.2f} | {r['streaks']:.1f} |")
    return "\n".join(s)


if __name__ == "__main__":
    main()
