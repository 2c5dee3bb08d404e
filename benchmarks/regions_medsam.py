"""LiteMedSAM region maps: what they add to `rat denoise`, and how good they are.

Speed (issue 23: maps may add at most 50 % to a 512^2 CT series' restore time and 100 %
on a single slice). In one process, interleaved, fastest of `--repeats`:
- model time: rat-ct restoring the series with its region maps already computed
  (precomputed maps: what a region-cache hit costs);
- + LiteMedSAM: the same restore computing LiteMedSAM maps (no cache), with key-slice
  reuse (`reuse_diff`, default) and, for the series, without reuse (every slice runs
  the model); on a single slice also in float32 where the default precision is
  bfloat16 (a CPU with native bfloat16);
- + classical: the same with the classical partitioner, for reference.
Printed: wall and CPU seconds (this process, all threads: other jobs on a shared machine
move it far less than wall time), CPU ms per slice, and what the maps add, (restore with
maps) / (model time) - 1.

Quality, without labels (`ratcli.regions.quality`): the edge-alignment ratio (how much
more often region boundaries lie on the image's strongest 10 % of gradients than pixels
at random; 1 = chance) per slice of CT (the series), PET (examples/pet.nii.gz middle
slices) and H&E (a 512^2 crop of a shared H&E image, else examples/slide.tif); and
slice-to-slice stability (adjusted Rand index of neighbouring slices' maps, each slice
computed on its own), LiteMedSAM vs classical; where LiteMedSAM runs in bfloat16, how
alike its maps are to float32 maps (adjusted Rand) and the float32 maps' edge alignment.

Prompt choices (`--prompts`): SAM-style point grids vs box grids vs both, and the decode
grid, on one CT, PET and H&E slice: prompts, decode time, regions, edge alignment.

Run: `python benchmarks/regions_medsam.py [--slices 8] [--repeats 2] [--threads 2]
[--prompts]`.
The series is 512^2 slices of ../shared/data/ct/lidc-idri-0314-chest-2mm.nii.gz (2 mm
apart) when present, else examples/ct_series (3 slices).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ratcli.inference.restorer import Restorer
from ratcli.io import read
from ratcli.models import load_checkpoint
from ratcli.regions import ClassicalPartitioner, PrecomputedPartitioner
from ratcli.regions.medsam import LiteMedSamPartitioner
from ratcli.regions.quality import adjusted_rand, edge_alignment
from ratcli.tasks import TASKS
from ratcli.weights import resolve_weights

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def ct_series(n: int):
    """An Image of n neighbouring 512^2 CT slices (HU)."""
    path = SHARED / "ct" / "lidc-idri-0314-chest-2mm.nii.gz"
    image = read(path if path.is_file() else ROOT / "examples" / "ct_series")
    z0 = max(0, image.num_slices // 2 - n // 2)
    return image.derived(image.array[z0:z0 + n]) if image.num_slices > n else image


def he_tile() -> np.ndarray:
    path = SHARED / "he" / "henorm-example1-he.png"
    rgb = read(path if path.is_file() else ROOT / "examples" / "slide.tif").array[0]
    return np.ascontiguousarray(rgb[:512, :512])


def restore_seconds(restorer: Restorer, image, partitioner) -> tuple[float, float]:
    """(wall, CPU) seconds of one restore: this process's CPU time (all its threads)
    moves far less than wall time when other jobs share the machine."""
    restorer.partitioner = partitioner
    start, cpu = time.perf_counter(), time.process_time()
    restorer.restore(image)
    return time.perf_counter() - start, time.process_time() - cpu


def speed(args) -> None:
    task = TASKS["ct"]
    model = load_checkpoint(resolve_weights("rat-ct")).build()
    restorer = Restorer(model, task)
    for label, image in (("single slice", ct_series(1)), ("series", ct_series(args.slices))):
        norm = task.normalize(image.array, task.norm_params(image.array))
        med = LiteMedSamPartitioner().for_task(task)
        maps = med.partition_volume(norm)  # also loads the model
        maps_file = Path(tempfile.mkdtemp()) / "maps.npy"
        np.save(maps_file, maps)
        runs = {"model time (maps cached)": partial(PrecomputedPartitioner, maps_file),
                "+ LiteMedSAM": partial(_fresh, med, task),
                "+ classical": ClassicalPartitioner}
        if image.num_slices > 1:
            runs["+ LiteMedSAM, no reuse"] = partial(_fresh, med, task, reuse_diff=0.0)
        elif med.precision != "float32":
            med32 = LiteMedSamPartitioner(precision="float32").for_task(task)
            med32.partition_volume(norm)  # loads the float32 model
            runs["+ LiteMedSAM, float32"] = partial(_fresh, med32, task, precision="float32")
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
        encoded = {}
        for _ in range(args.repeats):
            for name, make in runs.items():
                part = make()
                times[name].append(restore_seconds(restorer, image, part))
                encoded[name] = getattr(part, "encoded", None)
        base = [min(t[i] for t in times["model time (maps cached)"]) for i in (0, 1)]
        Z = image.num_slices
        print(f"\n{label}: {Z} slice(s) of {image.array.shape[1]}x{image.array.shape[2]} "
              "(fastest run; wall and CPU seconds, CPU ms per slice, what maps add)")
        for name, ts in times.items():
            wall, cpu = (min(t[i] for t in ts) for i in (0, 1))
            keys = f", model ran on {encoded[name]} of {Z}" if encoded[name] is not None else ""
            print(f"  {name:<28} wall {wall:6.2f} s ({100 * (wall / base[0] - 1):+4.0f} %)  "
                  f"CPU {cpu:6.2f} s {1000 * cpu / Z:6.0f} ms/slice "
                  f"({100 * (cpu / base[1] - 1):+4.0f} %){keys}")


def _fresh(med: LiteMedSamPartitioner, task, **settings) -> LiteMedSamPartitioner:
    """A LiteMedSAM partitioner with no key slice yet, sharing the loaded model."""
    part = LiteMedSamPartitioner(**settings).for_task(task)
    assert part.precision == med.precision
    part.__dict__["_shared"]._generator = med.generator
    return part


def quality(args) -> None:
    task_ct, task_pet = TASKS["ct"], TASKS["pet"]
    ct = ct_series(args.slices)
    pet = read(ROOT / "examples" / "pet.nii.gz")
    zp = pet.num_slices // 2
    cases = {
        "CT": (task_ct.normalize(ct.array, task_ct.norm_params(ct.array)), task_ct),
        "PET": (task_pet.normalize(pet.array, task_pet.norm_params(pet.array))[zp - 2:zp + 2],
                task_pet),
        "H&E": (he_tile()[None], None),
    }
    print("\nquality: edge alignment (1 = chance; mean over slices), regions per slice, "
          "neighbour stability (adjusted Rand, mean)")
    for name, (volume, task) in cases.items():
        for label, part in (("litemedsam", LiteMedSamPartitioner(reuse_diff=0.0)),
                            ("classical", ClassicalPartitioner())):
            part = part.for_task(task)
            maps = part.partition_volume(volume)
            views = [part.view(s) for s in volume]
            ratios = [edge_alignment(v, m) for v, m in zip(views, maps, strict=True)]
            counts = [len(np.unique(m)) for m in maps]
            ari = [adjusted_rand(a, b) for a, b in zip(maps[:-1], maps[1:], strict=True)]
            stab = f"{statistics.mean(ari):.2f}" if ari else "-"
            print(f"  {name:<4} {label:<11} edge ratio {np.nanmean(ratios):4.2f} "
                  f"(min {np.nanmin(ratios):4.2f})  regions {min(counts)}-{max(counts)}  "
                  f"stability {stab}")
    # what key-slice reuse costs: the reused maps against each slice's own map
    volume = cases["CT"][0]
    own = LiteMedSamPartitioner(reuse_diff=0.0).for_task(task_ct).partition_volume(volume)
    shared = LiteMedSamPartitioner().for_task(task_ct)
    reused = shared.partition_volume(volume)
    ari = [adjusted_rand(a, b) for a, b in zip(own, reused, strict=True)]
    print(f"  CT key-slice reuse: model ran on {shared.encoded} of {len(volume)} slices; "
          f"reused vs own maps adjusted Rand {statistics.mean(ari):.2f} (min {min(ari):.2f})")
    if LiteMedSamPartitioner(reuse_diff=0.0).precision == "float32":
        return
    # what bfloat16 changes: each slice's map against its float32 map
    for name, (volume, task) in cases.items():
        half = LiteMedSamPartitioner(reuse_diff=0.0).for_task(task)
        full = LiteMedSamPartitioner(reuse_diff=0.0, precision="float32").for_task(task)
        a, b = half.partition_volume(volume), full.partition_volume(volume)
        ari = [adjusted_rand(x, y) for x, y in zip(a, b, strict=True)]
        views = [full.view(s) for s in volume]
        edge = [edge_alignment(v, m) for v, m in zip(views, b, strict=True)]
        print(f"  {name:<4} bfloat16 vs float32 maps: adjusted Rand {statistics.mean(ari):.2f} "
              f"(min {min(ari):.2f}); float32 edge ratio {np.nanmean(edge):4.2f}, regions "
              f"{min(len(np.unique(m)) for m in b)}-{max(len(np.unique(m)) for m in b)}")


PROMPT_CHOICES = {
    "boxes 128+64 (default)": {},
    "boxes 128+64, every box": {"min_box_edges": 0.0},
    "boxes, 16x16 decode grid": {"decode_grid": 16},
    "points 8x8": {"prompts": "points"},
    "boxes 128+64 + points 4x4": {"prompts": "both", "points_per_side": 4},
    "boxes 96 only": {"box_sizes": (96,)},
}


def prompt_choices(args) -> None:
    """Point grids vs box grids vs both, on one CT, PET and H&E slice (one encoder pass
    each, then every prompt choice on the same embedding)."""
    from ratcli.regions.medsam import _to_size, preprocess
    from ratcli.regions.prompts import BoxGridMaskGenerator

    task_ct, task_pet = TASKS["ct"], TASKS["pet"]
    ct = ct_series(1)
    pet = read(ROOT / "examples" / "pet.nii.gz")
    cases = {"CT": (task_ct.normalize(ct.array, task_ct.norm_params(ct.array))[0], task_ct),
             "PET": (task_pet.normalize(pet.array, task_pet.norm_params(pet.array))[
                 pet.num_slices // 2], task_pet),
             "H&E": (he_tile(), None)}
    base = LiteMedSamPartitioner(reuse_diff=0.0)
    model = base.generator.model
    print("\nprompt choices: prompts decoded, decode seconds, regions, edge alignment")
    for name, (slice2d, task) in cases.items():
        view = base.for_task(task).view(slice2d)
        x, sizes = preprocess([view])
        dtype = next(model.image_encoder.parameters()).dtype
        with torch.inference_mode():
            embedding = model.image_encoder(
                x.to(dtype).contiguous(memory_format=torch.channels_last))
        for label, settings in PROMPT_CHOICES.items():
            gen = BoxGridMaskGenerator(model, **settings)
            start = time.perf_counter()
            labels = _to_size(gen.generate(embedding, x[0], sizes[0]), view.shape[:2])
            seconds = time.perf_counter() - start
            print(f"  {name:<4} {label:<27} {gen.last_prompts:3d} prompts {seconds:6.2f} s  "
                  f"{len(np.unique(labels)):3d} regions  edge {edge_alignment(view, labels):.2f}")


def figure(path: Path) -> None:
    """One PNG: LiteMedSAM (top) and classical (bottom) region overlays of a CT slice,
    a PET slice (enlarged 4x) and an H&E tile, each 384 px."""
    from PIL import Image as PILImage

    from ratcli.regions.overlay import overlay

    task_ct, task_pet = TASKS["ct"], TASKS["pet"]
    ct = read(ROOT / "examples" / "ct_series" / "IM0001.dcm")
    pet = read(ROOT / "examples" / "pet.nii.gz")
    cases = [(task_ct.normalize(ct.array, task_ct.norm_params(ct.array))[0], task_ct),
             (task_pet.normalize(pet.array, task_pet.norm_params(pet.array))[
                 pet.num_slices // 2], task_pet),
             (he_tile(), None)]
    rows = []
    for part in (LiteMedSamPartitioner(reuse_diff=0.0), ClassicalPartitioner()):
        tiles = []
        for slice2d, task in cases:
            p = part.for_task(task)
            labels = p(slice2d)
            view = p.view(slice2d)
            f = max(1, 384 // view.shape[0])
            view = np.repeat(np.repeat(view, f, 0), f, 1)
            labels = np.repeat(np.repeat(labels, f, 0), f, 1)
            tile = PILImage.fromarray(overlay(view, labels)).resize((384, 384),
                                                                   PILImage.NEAREST)
            tiles.append(np.asarray(tile))
        rows.append(np.concatenate(tiles, axis=1))
    PILImage.fromarray(np.concatenate(rows, axis=0)).save(path, optimize=True)
    print(f"\nfigure: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--prompts", action="store_true", help="also compare prompt choices")
    parser.add_argument("--figure", type=Path, help="write the README's overlay figure here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_speed:
        speed(args)
    if not args.skip_quality:
        quality(args)
    if args.prompts:
        prompt_choices(args)
    if args.figure:
        figure(args.figure)


if __name__ == "__main__":
    main()
