"""R-MSA cost against the dense-mask reference, unmasked global SDPA and W-MSA.

For input images of 128^2, 256^2 and 512^2 (tokens = the H/4 bottleneck map, 256 channels,
8 heads, as in RAT at width 64) and a realistic region map (~30 regions, one covering ~40%
of the image), prints forward time (best of repeats, all variants interleaved in this
process) and peak memory (each variant in a fresh subprocess: peak RSS above the RSS just
before the call), then the ratios. Run: `python benchmarks/attention.py [--sizes 128 256]`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from ratcli.models.attention import region_attention, window_attention

HEADS, HEAD_DIM, DENSE_LIMIT_GB = 8, 32, 12.0


def region_map(size: int, n_regions: int = 30, seed: int = 0) -> np.ndarray:
    """(size, size) labels: one ellipse with ~40% of the area, the rest Voronoi cells."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    seeds = rng.random((n_regions - 1, 2))
    d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    labels = d.argmin(-1) + 1
    r = np.sqrt(0.4 / np.pi)  # ellipse with area 0.4
    labels[((yy - 0.5) / r) ** 2 + ((xx - 0.5) / r) ** 2 < 1] = 0
    return labels


def inputs(size: int) -> tuple[torch.Tensor, ...]:
    n = size // 4  # bottleneck grid
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, HEADS, n * n, HEAD_DIM, generator=g) for _ in range(3))
    labels = torch.from_numpy(region_map(size)[2::4, 2::4].copy()).reshape(1, n * n)
    return q, k, v, labels


def dense_reference(q, k, v, labels):
    """The reference code's way: an (L, L) additive mask and full attention."""
    mask = torch.where(labels[:, None, :, None] == labels[:, None, None, :], 0.0, -1000.0)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5 + mask
    return scores.softmax(-1) @ v


def windows(q, k, v, labels):
    """W-MSA over 4x4 windows of the same token grid."""
    n = int(q.shape[2] ** 0.5)

    def part(t):  # (1, h, n*n, d) -> (nW, h, 16, d)
        t = t.reshape(HEADS, n // 4, 4, n // 4, 4, HEAD_DIM).permute(1, 3, 0, 2, 4, 5)
        return t.reshape(-1, HEADS, 16, HEAD_DIM)

    return window_attention(part(q), part(k), part(v))


VARIANTS = {
    "dense-mask reference": dense_reference,
    "R-MSA (ours)": region_attention,
    "global SDPA (no mask)": lambda q, k, v, labels: F.scaled_dot_product_attention(q, k, v),
    "W-MSA 4x4": windows,
}


def dense_bytes(size: int) -> float:
    L = (size // 4) ** 2
    return 3 * HEADS * L * L * 4  # mask + scores + softmax, float32


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _reset_peak() -> None:
    """Reset VmHWM so temporaries of the set-up are not counted (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss() -> int:
    """VmHWM: this process's own high-water mark (ru_maxrss would include the parent's)."""
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def measure_memory(variant: str, size: int) -> float:
    """Peak bytes a variant adds, in a fresh interpreter (so earlier peaks don't hide it)."""
    code = (
        "import sys, json, torch; sys.path.insert(0, 'benchmarks');"
        "import attention as b; torch.set_num_threads(2);"
        # warm up on a small input so one-time allocations (kernels, thread pools) are
        # not charged to the variant
        f"b.VARIANTS[{variant!r}](*b.inputs(32));"
        f"args = b.inputs({size}); b._reset_peak(); before = b._rss_now();"
        f"b.VARIANTS[{variant!r}](*args);"
        "print(json.dumps(b._peak_rss() - before))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def measure_time(size: int, names: list[str], repeats: int) -> dict[str, float]:
    args = inputs(size)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for _ in range(repeats):
            for n in names:  # interleaved so machine noise hits all variants alike
                t0 = time.perf_counter()
                VARIANTS[n](*args)
                times[n].append(time.perf_counter() - t0)
    return {n: min(t) for n, t in times.items()}  # min: least disturbed by other load


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--repeats", type=int, default=5)
    a = parser.parse_args()
    rows = []
    for size in a.sizes:
        names = list(VARIANTS)
        note = ""
        if dense_bytes(size) / 2**30 > DENSE_LIMIT_GB:
            names.remove("dense-mask reference")
            note = f"dense reference skipped: needs ~{dense_bytes(size) / 2**30:.0f} GB"
        t = measure_time(size, names, a.repeats)
        m = {n: measure_memory(n, size) for n in names}
        rows.append({"size": size, "tokens": (size // 4) ** 2, "time": t, "mem": m, "note": note})

    print(f"{'input':>7} {'tokens':>7} {'variant':<22} {'time ms':>9} {'peak MB':>9}")
    for r in rows:
        for n in r["time"]:
            print(f"{r['size']:>5}^2 {r['tokens']:>7} {n:<22} {r['time'][n] * 1e3:>9.1f} "
                  f"{r['mem'][n] / 2**20:>9.1f}")
        if r["note"]:
            print(f"{'':>16}{r['note']}")
    print("\nratios (higher = R-MSA better)")
    print(f"{'input':>7} {'dense/R-MSA time':>17} {'dense/R-MSA mem':>16} {'R-MSA/SDPA time':>16}")
    for r in rows:
        t, m, ours = r["time"], r["mem"], "R-MSA (ours)"
        dt = f"{t['dense-mask reference'] / t[ours]:.1f}x" if "dense-mask reference" in t else "-"
        dm = (f"{m['dense-mask reference'] / max(m[ours], 1):.1f}x"
              if "dense-mask reference" in m else "-")
        print(f"{r['size']:>5}^2 {dt:>17} {dm:>16} {t[ours] / t['global SDPA (no mask)']:>15.2f}x")
    if "--json" in sys.argv:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
