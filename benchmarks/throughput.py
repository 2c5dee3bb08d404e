"""Throughput of `rat` on real 512^2 CT slices and on tissue, old checkout against new.

One run measures, side by side under the same load and thread count:
1. `rat denoise` end to end on single 512^2 CT slices (a subprocess per call, start-up
   included; peak RSS of each call), and the same work split into start-up (imports,
   weights), read, regions (per slice; the first call's one-off scikit-image import
   apart), model and write;
2. BM3D (package `bm3d`) and NLM (scikit-image) on the same slices;
3. a 64-slice series in one `rat denoise` call: slices per minute against calling rat
   once per slice;
4. forward FLOP/s (torch.utils.flop_counter.FlopCounterMode) at width 16 and 32, as a
   fraction of a measured fp32 2048^3 matmul, in wall time at the run's thread count and
   in CPU time on one thread (steadier on a shared machine). FlopCounterMode counts matmuls and
   convolutions only; it has no formula for the CPU attention kernel
   (aten::_scaled_dot_product_flash_attention_for_cpu), so the attention FLOPs
   (4 * L_q * L_k * head_dim per head) are added here and both figures are printed;
   element-wise work (softmax exp, norms, GELU) is counted by neither; and both widths
   once more with attention made free (SDPA stubbed out), the bound on the width ratio
   that any faster attention kernel could reach;
5. `rat sr` output megapixels per second on tissue (examples/slide.tif) for x2 and x4:
   an in-memory crop through the Python API (`sr`), and the streaming slide path that
   `rat sr slide.svs` takes (`slide`: a tiled TIFF of the crop, every chunk on tissue);
6. (`--parts size`, not run by default) issue 22's size rule: `rat denoise` end to end on
   single 512^2 slices with rat-ct's config at width 16 2D, width 16 2.5D (one
   neighbouring slice on each side; a lone slice sees itself replicated) and width 32 2D
   (random-init weights: the time does not depend on the values), against BM3D on the
   same slices, `--repeat` rounds taking turns.

CT slices come from ../shared/data/ct/*.nii.gz (read with SimpleITK; the benchmark
skips with a message when that folder is absent), with Gaussian noise of 25 HU added to
mimic a low-dose scan. The old checkout is a directory with the package at an earlier
commit (`git archive f362d14 | tar -x -C /tmp/old`), run through PYTHONPATH.

Run: `python benchmarks/throughput.py [--old /tmp/old] [--series 64] [--threads N]
[--parts ct,series,flops,sr,slide,size] [--sr-size N] [--repeat N]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ct"
NOISE_HU = 25.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, default=None, help="old checkout to compare with")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--slices", type=int, default=2, help="single slices timed end to end")
    ap.add_argument("--series", type=int, default=64, help="slices of the series run")
    ap.add_argument("--old-series", action="store_true", help="also run the series on --old")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--sr-size", type=int, default=256,
                    help="input edge of the x2 tissue crop, the x2 slide tile (x4: half)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each SR part, old and new taking turns (the fastest counts), "
                         "and rounds of the size part")
    ap.add_argument("--parts", default="ct,series,flops,sr,slide",
                    help="comma list of the parts to run: ct (1-2), series, flops, sr, slide, "
                         "size (not in the default)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args.child)
    files = sorted(args.data.glob("*.nii.gz")) if args.data.is_dir() else []
    if not files:
        print(f"skipped: no CT volumes in {args.data} (../shared/data/ct/*.nii.gz; or --data)")
        return
    roots = {"new": ROOT} | ({"old": args.old} if args.old else {})
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = max(files, key=lambda f: f.stat().st_size)
        singles, series = _make_inputs(source, tmp, args.slices, args.series)
        parts = set(args.parts.split(","))
        print(f"threads {args.threads}; 512^2 slices of {source.name} + {NOISE_HU} HU noise")
        if parts & {"ct", "series"}:
            e2e = {k: _end_to_end(r, singles, tmp, env) for k, r in roots.items()}
        if "ct" in parts:
            split = {k: _run_child(r, env, "split", str(singles[0])) for k, r in roots.items()}
            _report_ct(e2e, split, _classical_baselines(singles))
        if "series" in parts:
            ser = {k: _series(r, series, tmp, env) for k, r in roots.items()
                   if k == "new" or args.old_series}
            _report_series(ser, e2e, args.series)
        if "flops" in parts:
            _report_flops(_run_child(ROOT, env, "flops", str(singles[0])))
        for part, title in (("sr", "in-memory crop (Python API, regions included)"),
                            ("slide", "streaming slide path (restore_slide, no background "
                                      "skipped)")):
            if part in parts:
                sr = _interleaved(roots, env, part, args.sr_size, args.repeat)
                _report_sr(sr, f"SR on tissue, {title}", args.repeat)
        if "size" in parts:
            _report_size(*_sizes(singles, tmp, env, args.repeat))


def _interleaved(roots: dict, env: dict, part: str, size: int, repeat: int) -> dict:
    """{root: {scale: fastest child result}} of `repeat` rounds in which every root runs
    the SR part in turn, so a slow spell of a shared machine hits old and new alike."""
    best: dict = {k: {} for k in roots}
    for _ in range(repeat):
        for s in (2, 4):
            for k, r in roots.items():
                res = _run_child(r, env, part, str(s), str(size // (s // 2)))
                if s not in best[k] or res["seconds"] < best[k][s]["seconds"]:
                    best[k][s] = res
    return best


# -- inputs ---------------------------------------------------------------------------

def _make_inputs(source: Path, tmp: Path, n_single: int, n_series: int
                 ) -> tuple[list[Path], Path]:
    """Noisy int16 NIfTI files: n_single one-slice files and one n_series-slice file."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(source))
    vol = sitk.GetArrayFromImage(img).astype(np.float32)  # (Z, 512, 512) HU
    rng = np.random.default_rng(0)
    z0 = max(0, vol.shape[0] // 2 - n_series // 2)
    stack = vol[z0 : z0 + n_series]
    stack = np.clip(np.rint(stack + rng.normal(0, NOISE_HU, stack.shape)), -1024, 3071)

    def write(arr: np.ndarray, path: Path) -> Path:
        out = sitk.GetImageFromArray(arr.astype(np.int16))
        out.SetSpacing(img.GetSpacing())
        sitk.WriteImage(out, str(path))
        return path

    mid = len(stack) // 2
    singles = [write(stack[mid + i : mid + i + 1], tmp / f"slice{i}.nii.gz")
               for i in range(n_single)]
    return singles, write(stack, tmp / "series.nii.gz")


# -- measurements in this process ------------------------------------------------------

def _end_to_end(root: Path, singles: list[Path], tmp: Path, env: dict) -> dict:
    """`rat denoise` on each single slice: wall seconds and peak RSS per call."""
    times, rss = [], []
    for i, f in enumerate(singles):
        t, r = _rat(root, f, tmp / f"{root.name}-{i}.nii.gz", tmp / f"cache-{root.name}-{i}", env)
        times.append(t)
        rss.append(r)
    return {"seconds": float(np.median(times)), "rss_mb": max(rss)}


def _series(root: Path, series: Path, tmp: Path, env: dict) -> dict:
    t, r = _rat(root, series, tmp / f"{root.name}-series.nii.gz", tmp / f"cache-s-{root.name}",
                env)
    return {"seconds": t, "rss_mb": r}


def _rat(root: Path, src: Path, dst: Path, cache: Path, env: dict, *extra: str
         ) -> tuple[float, float]:
    """One `rat denoise` subprocess (fresh region cache): (wall seconds, peak RSS MB)."""
    env = dict(env, PYTHONPATH=str(root), RAT_CACHE=str(cache))
    cmd = [sys.executable, "-m", "ratcli", "denoise", str(src), "-o", str(dst), "--task", "ct",
           "--regions", "classical", "--device", "cpu", "--overwrite", *extra]
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        # cwd: `python -m` puts the working directory first on sys.path, which would
        # shadow PYTHONPATH (run from a checkout, "old" would run the new package)
        proc = subprocess.Popen(cmd, env=env, cwd=cache.parent, stdout=subprocess.DEVNULL,
                                stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (peak RSS)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed: {err.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def _classical_baselines(singles: list[Path], nlm: bool = True) -> dict:
    """BM3D and NLM seconds per slice (median over the slices), sigma = the added noise."""
    import bm3d
    import SimpleITK as sitk
    from skimage.restoration import denoise_nl_means

    out: dict[str, list[float]] = {"BM3D": [], "NLM": []}
    for f in singles:
        x = (sitk.GetArrayFromImage(sitk.ReadImage(str(f)))[0].astype(np.float64) + 1024) / 4096
        sigma = NOISE_HU / 4096
        t = time.perf_counter()
        bm3d.bm3d(x, sigma_psd=sigma)
        out["BM3D"].append(time.perf_counter() - t)
        if not nlm:
            continue
        t = time.perf_counter()
        denoise_nl_means(x, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6,
                         fast_mode=True)
        out["NLM"].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in out.items() if v}


SIZES = {"w16-2d": {}, "w16-2.5d": {"context_slices": 1}, "w32-2d": {"width": 32}}


def _sizes(singles: list[Path], tmp: Path, env: dict, rounds: int) -> tuple[dict, dict]:
    """({variant: [seconds of each rat denoise call]}, {"BM3D": [seconds per slice]}):
    `rounds` rounds of BM3D and then every SIZES variant on every single slice."""
    import torch

    from ratcli.models import build_rat, load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(ROOT / "weights" / "rat-ct.pt")
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("provenance", "storage")}
    weights = {}
    for name, change in SIZES.items():
        config = type(ckpt.config)(**{**ckpt.config.to_dict(), **change})
        torch.manual_seed(0)
        weights[name] = tmp / f"{name}.pt"
        save_checkpoint(weights[name], build_rat(config), config, {**meta, "name": name})
    times: dict = {name: [] for name in SIZES}
    base: dict = {"BM3D": []}
    for r in range(rounds):
        for f in singles:
            base["BM3D"].append(_classical_baselines([f], nlm=False)["BM3D"])
        for name, path in weights.items():
            for i, f in enumerate(singles):
                t, _ = _rat(ROOT, f, tmp / f"{name}-{r}-{i}.nii.gz",
                            tmp / f"cache-{name}-{r}-{i}", env, "--weights", str(path))
                times[name].append(t)
    return times, base


def _run_child(root: Path, env: dict, *argv: str) -> dict:
    """Run `_child(argv)` of this file with `root`'s package first on the path."""
    cmd = [sys.executable, __file__, "--child", str(root), *argv]
    res = subprocess.run(cmd, env=dict(env, PYTHONPATH=str(root)), capture_output=True,
                         text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- measurements in a child process (the package under test on the path) --------------

def _child(argv: list[str]) -> None:
    root, what, *rest = argv
    sys.path.insert(0, root)
    result = {"split": _child_split, "flops": _child_flops, "sr": _child_sr,
              "slide": _child_slide}[what](*rest)
    print(json.dumps(result))


def _child_split(path: str) -> dict:
    """Seconds of each stage of `rat denoise` on one slice, in the library's own calls."""
    t0 = time.perf_counter()
    import torch

    from ratcli.api import Session
    from ratcli.io import read, write
    from ratcli.tasks import TASKS

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    session = Session(mode="denoise", task="ct", device="cpu", partitioner="none")
    restorer, _ = session.restorer(TASKS["ct"])
    t1 = time.perf_counter()
    image = read(path)
    t2 = time.perf_counter()
    from ratcli.regions import ClassicalPartitioner

    task = TASKS["ct"]
    norm = task.normalize(image.array, task.norm_params(image.array))
    labels = [ClassicalPartitioner()(s) for s in norm]  # the first call imports skimage
    t2b = time.perf_counter()
    labels = [ClassicalPartitioner()(s) for s in norm]  # per slice from then on
    t3 = time.perf_counter()
    restorer.partitioner = _Replay(labels)
    out = restorer.restore(image)
    t4 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write(out, Path(tmp) / "out.nii.gz")
    t5 = time.perf_counter()
    return {"start-up": t1 - t0, "read": t2 - t1, "regions": t3 - t2b, "model": t4 - t3,
            "write": t5 - t4, "regions import": max(0.0, (t2b - t2) - (t3 - t2b))}


class _Replay:
    """A partitioner that hands back precomputed label maps in slice order."""

    def __init__(self, labels: list[np.ndarray]) -> None:
        self.labels, self.i = labels, 0

    def __call__(self, slice2d: np.ndarray) -> np.ndarray:
        self.i += 1
        return self.labels[self.i - 1]


def _child_flops(path: str) -> dict:
    """Forward FLOP/s of width 16 (shipped rat-ct) and 32 on a 256^2 crop with real regions,
    against an fp32 2048^3 matmul."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ratcli.io import read
    from ratcli.models import build_rat, load_checkpoint
    from ratcli.regions import ClassicalPartitioner
    from ratcli.tasks import TASKS

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    task = TASKS["ct"]
    image = read(path)
    norm = task.normalize(image.array, task.norm_params(image.array))[0]
    labels = ClassicalPartitioner()(norm)
    x = torch.from_numpy(norm[128:384, 128:384].copy())[None, None]
    r = torch.from_numpy(labels[128:384, 128:384].astype(np.int64))[None]
    ckpt = load_checkpoint(Path(os.environ["PYTHONPATH"]) / "weights" / "rat-ct.pt")
    w16 = ckpt.build(torch.device("cpu")).eval()
    w32 = build_rat(type(ckpt.config)(**{**ckpt.config.to_dict(), "width": 32})).eval()
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    out: dict = {}
    # wall time at the benchmark's thread count, and CPU time on one thread (steadier on
    # a shared machine); the matmul is measured the same two ways
    for mode, threads, clock in (("wall", torch.get_num_threads(), time.perf_counter),
                                 ("cpu1", 1, time.process_time)):
        torch.set_num_threads(threads)
        res = {"matmul": 2 * 2048**3 / _best(lambda: a @ b, clock=clock)}
        with torch.inference_mode():
            for name, model in (("w16", w16), ("w32", w32)):
                res[name] = {"seconds": _best(lambda m=model: m(x, r), clock=clock)}
                with _free_attention():  # the bound on what faster attention could give
                    res[name]["no_attention"] = _best(lambda m=model: m(x, r), clock=clock)
        out[mode] = res
    with torch.inference_mode(), _unpadded():
        for name, model in (("w16", w16), ("w32", w32)):
            with FlopCounterMode(display=False) as fc:
                model(x, r)
            out[name] = {"counted": fc.get_total_flops(),
                         "attention": _attention_flops(model, x, r)}
    return out


@contextlib.contextmanager
def _free_attention():
    """Replace SDPA by a stub that returns v (no arithmetic): the forward's time without
    attention, so the report can say what any attention speed-up could reach."""
    import torch.nn.functional as F

    sdpa = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = lambda q, k, v, *a, **kw: v.expand(*q.shape[:-1],
                                                                      v.shape[-1])
    try:
        yield
    finally:
        F.scaled_dot_product_attention = sdpa


@contextlib.contextmanager
def _unpadded():
    """Count the model's own arithmetic: switch off the CPU head-dim zero padding (new
    code) so FlopCounterMode does not count multiplications by the padded zeros."""
    import ratcli.models.blocks as blocks

    saved = getattr(blocks, "_CPU_MIN_HEAD_DIM", None)
    if saved is not None:
        blocks._CPU_MIN_HEAD_DIM = 0
    try:
        yield
    finally:
        if saved is not None:
            blocks._CPU_MIN_HEAD_DIM = saved


def _attention_flops(model, x, r) -> int:
    """4 * Lq * Lk * D per head of every CPU attention call in one forward; D is the true
    head dim (from the logit scale when the call's head dim is zero-padded)."""
    import torch

    total = 0
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting(q, k, v, *a, **kw):
        nonlocal total
        d = round(kw["scale"] ** -2) if kw.get("scale") else q.shape[-1]
        total += 4 * q.shape[:-2].numel() * q.shape[-2] * k.shape[-2] * d
        return sdpa(q, k, v, *a, **kw)

    torch.nn.functional.scaled_dot_product_attention = counting
    try:
        model(x, r)
    finally:
        torch.nn.functional.scaled_dot_product_attention = sdpa
    return total


def _tissue_crop(n: int) -> np.ndarray:
    """The tissue-richest n x n RGB crop of examples/slide.tif."""
    import tifffile

    rgb = tifffile.imread(ROOT / "examples" / "slide.tif")
    dark = (rgb.min(-1) < 200).astype(np.float64).cumsum(0).cumsum(1)  # tissue pixels
    best = max(((y, x) for y in range(0, rgb.shape[0] - n + 1, 32)
                for x in range(0, rgb.shape[1] - n + 1, 32)),
               key=lambda p: dark[p[0] + n - 1, p[1] + n - 1] - dark[p[0] + n - 1, p[1]]
               - dark[p[0], p[1] + n - 1] + dark[p[0], p[1]])
    return np.ascontiguousarray(rgb[best[0] : best[0] + n, best[1] : best[1] + n])


def _child_sr(scale: str, size: str) -> dict:
    """Output megapixels per second of `rat sr` (Python API, classical regions) on the
    tissue-richest size x size crop of examples/slide.tif; start-up excluded."""
    import torch

    from ratcli.api import restore
    from ratcli.io.image import Domain, Image

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    s, n = int(scale), int(size)
    image = Image(_tissue_crop(n)[None], domain=Domain.RGB8, modality="SM")
    opts = dict(mode="sr", scale=s, device="cpu", partitioner="classical")
    os.environ["RAT_CACHE"] = tempfile.mkdtemp()
    t = time.perf_counter()
    out = restore(image, **opts)
    sec = time.perf_counter() - t
    return {"seconds": sec, "mp": out.array[0].shape[0] * out.array[0].shape[1] / 1e6}


def _child_slide(scale: str, size: str) -> dict:
    """Like _child_sr, through the streaming slide path (`restore_slide`, the Session's
    default tiles and batches) from a tiled TIFF of the crop, background skipping off."""
    import tifffile
    import torch

    from ratcli.api import Session
    from ratcli.inference.slide import restore_slide
    from ratcli.tasks import TASKS

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    s, n = int(scale), int(size)
    os.environ["RAT_CACHE"] = tempfile.mkdtemp()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "crop.tif", Path(tmp) / "out.tif"
        tifffile.imwrite(src, _tissue_crop(n), tile=(256, 256), photometric="rgb")
        session = Session(mode="sr", scale=s, device="cpu", partitioner="classical")
        restorer, _ = session.restorer(TASKS[f"sr-x{s}"])
        t = time.perf_counter()
        restore_slide(src, dst, restorer, skip_background=False)
        sec = time.perf_counter() - t
    return {"seconds": sec, "mp": (n * s) ** 2 / 1e6}


def _best(fn, repeats: int = 3, clock=time.perf_counter) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = clock()
        fn()
        times.append(clock() - t)
    return min(times)


# -- reports ----------------------------------------------------------------------------

def _report_ct(e2e: dict, split: dict, base: dict) -> None:
    print("\n1-2. CT 512^2 slice, seconds (median of single-slice calls)")
    keys = list(e2e)
    print(f"{'':28}" + "".join(f"{k:>10}" for k in keys) + ("   old/new" if len(keys) > 1 else ""))

    def row(name: str, vals: list[float]) -> None:
        ratio = f"{vals[1] / vals[0]:>10.2f}" if len(vals) > 1 and vals[0] > 0 else ""
        print(f"{name:28}" + "".join(f"{v:>10.2f}" for v in vals) + ratio)

    row("rat denoise end to end", [e2e[k]["seconds"] for k in keys])
    for stage in ("start-up", "read", "regions", "model", "write", "regions import"):
        row(f"  {stage}", [split[k].get(stage, 0.0) for k in keys])
    row("peak RSS (MB)", [e2e[k]["rss_mb"] for k in keys])
    for name, sec in base.items():
        print(f"{name:28}{sec:>10.2f}   rat(new)/{name} = {e2e['new']['seconds'] / sec:.2f}")
    new = split["new"]
    print(f"partitioner / model time (new): {new['regions'] / new['model']:.1%} per slice; "
          f"{(new['regions'] + new['regions import']) / new['model']:.1%} with the one-off "
          "scikit-image import of the first slice")


def _report_series(ser: dict, e2e: dict, n: int) -> None:
    print(f"\n3. {n}-slice series in one call vs rat once per slice")
    for k, v in ser.items():
        per_min = 60 * n / v["seconds"]
        once = 60 / e2e[k]["seconds"]
        print(f"  {k}: {v['seconds']:.1f} s, {per_min:.1f} slices/min; once per slice "
              f"{once:.1f} slices/min; ratio {per_min / once:.2f}x; peak RSS {v['rss_mb']:.0f} MB")


def _report_flops(f: dict) -> None:
    print("\n4. forward FLOP/s, 256^2 crop with its real region map (FLOPs of the model's own "
          "arithmetic, head-dim padding not counted)")
    for mode, label in (("wall", "wall time, all threads"), ("cpu1", "CPU time, 1 thread")):
        mm = f[mode]["matmul"]
        print(f"  {label}: fp32 2048^3 matmul {mm / 1e9:.1f} GFLOP/s")
        for name in ("w16", "w32"):
            sec, n = f[mode][name]["seconds"], f[name]["counted"]
            total = n + f[name]["attention"]
            print(f"    {name}: {sec:.3f} s; FlopCounterMode {n / 1e9:.2f} GFLOP -> "
                  f"{n / sec / mm:.1%} of matmul; + attention {total / 1e9:.2f} GFLOP -> "
                  f"{total / sec / mm:.1%}")
        ratio = f[mode]["w32"]["seconds"] / f[mode]["w16"]["seconds"]
        print(f"    width 32 / width 16 time: {ratio:.2f}x")
        att = {n: f[mode][n]["seconds"] - f[mode][n]["no_attention"] for n in ("w16", "w32")}
        free = f[mode]["w32"]["no_attention"] / f[mode]["w16"]["no_attention"]
        print(f"    attention (SDPA calls) takes {att['w16']:.3f} s at width 16, "
              f"{att['w32']:.3f} s at width 32; with it free the ratio would be {free:.2f}x")


def _report_size(times: dict, base: dict) -> None:
    bm3d = float(np.median(base["BM3D"]))
    print(f"\n6. model size and 2.5D, rat denoise end to end on a 512^2 slice (median of "
          f"{len(base['BM3D'])} calls each, taking turns) against BM3D {bm3d:.2f} s "
          f"(range {min(base['BM3D']):.2f}-{max(base['BM3D']):.2f} s)")
    for name, sec in times.items():
        med = float(np.median(sec))
        print(f"  {name:9} {med:6.2f} s (range {min(sec):.2f}-{max(sec):.2f})  "
              f"/ BM3D = {med / bm3d:.2f}  {'within' if med <= bm3d else 'over'} BM3D's time")


def _report_sr(sr: dict, title: str, repeat: int) -> None:
    best = f", fastest of {repeat} runs taking turns" if repeat > 1 else ""
    print(f"\n5. {title}, output megapixels per second{best}")
    for s in (2, 4):
        vals = {k: sr[k][s]["mp"] / sr[k][s]["seconds"] for k in sr}
        text = "  ".join(f"{k} {v:.3f} MP/s ({sr[k][s]['seconds']:.1f} s)" for k, v in vals.items())
        ratio = f"  new/old {vals['new'] / vals['old']:.2f}x" if "old" in vals else ""
        print(f"  x{s}: {text}{ratio}")


if __name__ == "__main__":
    main()
