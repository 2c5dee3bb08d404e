"""Classical region partitioner time against the RAT forward pass on the same slice.

For a CT phantom slice (greyscale, 1-channel RAT) and an H&E-like tile (RGB, 3-channel
RAT), both 256x256 by default, prints the partitioner's time, the time of one RAT
forward at width 64 (CPU, float32, inference mode, with the partitioner's region map),
medians of interleaved repeats in this process, their ratio (target: < 5 %), and the
number of regions. Run: `python benchmarks/regions.py [--sizes 256 512] [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from ratcli.models import RATConfig, build_rat
from ratcli.phantoms import ct_phantom, he_tile
from ratcli.regions import ClassicalPartitioner
from ratcli.tasks import TASKS


def slices(size: int) -> dict[str, np.ndarray]:
    ct = ct_phantom(size, 1)
    spec = TASKS["ct"]
    return {"CT slice": spec.normalize(ct, spec.norm_params(ct))[0], "H&E tile": he_tile(size)}


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    partitioner = ClassicalPartitioner()
    models = {c: build_rat(RATConfig(in_channels=c, out_channels=c, width=args.width)).eval()
              for c in (1, 3)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"RAT width {args.width}, medians of {args.repeats} interleaved repeats\n")
    print(f"{'input':<10} {'size':>5} {'regions':>7} {'classical ms':>12} "
          f"{'RAT fwd ms':>10} {'ratio':>7}")
    for size in args.sizes:
        for name, image in slices(size).items():
            labels = partitioner(image)  # warm-up, and the region map for the forward
            x = torch.from_numpy(image.astype(np.float32) / (255.0 if image.ndim == 3 else 1.0))
            x = x.permute(2, 0, 1)[None] if x.ndim == 3 else x[None, None]  # (1, C, H, W)
            r = torch.from_numpy(labels.astype(np.int64))[None]  # (1, H, W)
            model = models[x.shape[1]]
            part_t, fwd_t = [], []
            with torch.inference_mode():
                model(x, r)  # warm-up
                for _ in range(args.repeats):
                    part_t.append(timed(partitioner, image))
                    fwd_t.append(timed(model, x, r))
            p, f = statistics.median(part_t), statistics.median(fwd_t)
            print(f"{name:<10} {size:>5} {len(np.unique(labels)):>7} {p * 1e3:>12.1f} "
                  f"{f * 1e3:>10.1f} {p / f:>7.2%}")


if __name__ == "__main__":
    main()
