"""Training and evaluation data: (low-quality input, full-quality target) volume pairs.

A data spec names where pairs come from:
- `DIR` holding `low/` and `full/` folders: paired data, matched by relative path, in any
  format `ratcli.io` reads (DICOM series, NIfTI volumes, PNG/TIFF, slide regions); a
  file on one side only is an error naming every such file (`allow_unpaired`: left out,
  with a note);
- `DIR` (or a file) without that layout: single-quality (full) data; the task's
  degradation simulator makes the inputs, seeded per volume so they are reproducible;
- `synthetic:TASK[,volumes=N][,slices=N][,size=N][,seed=N]`: phantoms from
  `ratcli.phantoms` (CT in HU, PET activity, H&E tiles) degraded by the simulator,
  for quick runs and tests. `seed` picks the phantom textures and lesions.

`load_pairs` returns whole volumes (`VolumePair`, two `Image`s); `patches.py` cuts them
into slices and random patches for training, `evaluate.py` restores them whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, is_dataclass, replace
from pathlib import Path

import numpy as np

from ratcli.errors import GeometryMismatchError, InputFormatError, InputNotFoundError, UsageError
from ratcli.io.image import Domain, Image
from ratcli.tasks import TaskSpec
from ratcli.training.degrade import Degradation

__all__ = ["VolumePair", "DataSpec", "parse_data_spec", "load_pairs", "split_pairs"]

# Field of view assumed for synthetic CT phantoms (mm), giving their pixel size.
SYNTHETIC_CT_FOV_MM = 350.0


@dataclass(frozen=True)
class VolumePair:
    """One volume (or 2D image, Z = 1) as network input and training/evaluation target.

    name: relative path of the target (or `synthetic/<kind>-<seed>`), unique in a set.
    input: low-quality Image, (Z, h, w) float32 physical units or (Z, h, w, 3) uint8.
    target: full-quality Image, (Z, h*s, w*s[, 3]) with s the task's scale.
    """

    name: str
    input: Image
    target: Image


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: kind is "paired" | "single" | "synthetic"."""

    kind: str
    path: Path | None = None
    synthetic: str | None = None
    volumes: int = 2
    slices: int = 4
    size: int = 64
    seed: int = 0

    def describe(self) -> dict:
        if self.kind == "synthetic":
            return {"kind": "synthetic", "phantom": self.synthetic, "volumes": self.volumes,
                    "slices": self.slices, "size": self.size, "seed": self.seed}
        return {"kind": self.kind, "path": str(self.path)}


def parse_data_spec(spec: str | Path) -> DataSpec:
    """Turn a `--data` value into a DataSpec (checks that paths exist)."""
    text = str(spec)
    if text.startswith("synthetic:"):
        return _parse_synthetic(text)
    path = Path(text).expanduser()
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such file or folder")
    if (path / "low").is_dir() and (path / "full").is_dir():
        return DataSpec("paired", path=path)
    return DataSpec("single", path=path)


def load_pairs(
    spec: DataSpec, task: TaskSpec, *, degradation: Degradation | None, seed: int = 0,
    realizations: int = 1, allow_unpaired: bool = False,
    on_note: Callable[[str], None] | None = None,
) -> list[VolumePair]:
    """Every volume pair of `spec` for `task`.

    degradation: the simulator for single-quality and synthetic data (required there).
    seed: seeds the simulator, per volume (volume i uses [seed, i]).
    realizations: simulated inputs per single-quality volume (realisation r > 0 uses
    [seed, i, r]); more than one keeps long runs from memorising one noise pattern.
    allow_unpaired: paired data may hold files on one side only; they are left out and
    `on_note` gets one line naming them all (else InputNotFoundError names them all).
    """
    if spec.kind == "paired":
        pairs = _load_paired(spec.path, task, allow_unpaired=allow_unpaired, on_note=on_note)
    else:
        if degradation is None:
            raise UsageError(f"{spec.path or spec.synthetic}: single-quality data needs a "
                             "degradation simulator")
        targets = _synthetic(spec, task) if spec.kind == "synthetic" else _load_single(spec.path)
        pairs = []
        for i, (name, target) in enumerate(targets):
            _check_task_image(target, task)
            target = _crop_to_scale(target, task.scale)
            sim = degradation.for_image(target)
            for r in range(realizations):
                rng = np.random.default_rng([seed, i] if r == 0 else [seed, i, r])
                low = np.stack([sim(s, rng) for s in target.array])
                pairs.append(VolumePair(name if r == 0 else f"{name}#sim{r}",
                                        target.derived(low, scale=1) if task.scale == 1
                                        else _shrunk(target, low, task.scale), target))
    if not pairs:
        raise InputNotFoundError(f"{spec.path or spec.synthetic}: no image pairs found")
    return pairs


def split_pairs(pairs: list[VolumePair], fraction: float = 0.1
                ) -> tuple[list[VolumePair], list[VolumePair]]:
    """(train, validation): the last `fraction` of the volumes (at least one) are held out.

    Whole volumes are held out, so neighbouring slices never sit on both sides. With a
    single volume, its last slices (at least one) are held out instead.
    """
    if len(pairs) >= 2:
        n_val = max(1, round(len(pairs) * fraction))
        return pairs[:-n_val], pairs[-n_val:]
    (only,) = pairs
    Z = only.target.num_slices
    if Z < 2:
        raise UsageError(f"{only.name}: one image cannot be split into training and "
                         "validation data; pass --val")
    n_val = max(1, round(Z * fraction))
    head = VolumePair(only.name, _take(only.input, slice(0, Z - n_val)),
                      _take(only.target, slice(0, Z - n_val)))
    tail = VolumePair(only.name + "#val", _take(only.input, slice(Z - n_val, Z)),
                      _take(only.target, slice(Z - n_val, Z)))
    return [head], [tail]


# -- private helpers, in call order -----------------------------------------------------


def _parse_synthetic(text: str) -> DataSpec:
    kind, *options = text[len("synthetic:"):].split(",")
    kind = {"sr": "he"}.get(kind, kind)
    if kind not in ("ct", "pet", "he"):
        raise UsageError(f"--data {text}: synthetic data is one of synthetic:ct, synthetic:pet, "
                         "synthetic:he (alias synthetic:sr)")
    values: dict[str, int] = {}
    for opt in options:
        key, _, val = opt.partition("=")
        if key not in ("volumes", "slices", "size", "seed") or not val.lstrip("-").isdigit():
            raise UsageError(f"--data {text}: bad option {opt!r} (volumes=, slices=, size=, seed=)")
        values[key] = int(val)
    spec = DataSpec("synthetic", synthetic=kind, **values)
    if spec.volumes < 1 or spec.slices < 1 or spec.size < 16:
        raise UsageError(f"--data {text}: need volumes >= 1, slices >= 1, size >= 16")
    return spec


def _load_paired(root: Path, task: TaskSpec, *, allow_unpaired: bool,
                 on_note: Callable[[str], None] | None) -> list[VolumePair]:
    """Match low/ and full/ sources by relative path; read and check each pair."""
    from ratcli.io import find_inputs, read

    low = {str(s.rel): s for s in find_inputs(root / "low")}
    full = {str(s.rel): s for s in find_inputs(root / "full")}
    unpaired = [f"{side}/{rel} (no {other}/{rel})" for side, mine, other, theirs in
                (("low", low, "full", full), ("full", full, "low", low))
                for rel in sorted(set(mine) - set(theirs))]
    if unpaired and not allow_unpaired:
        raise InputNotFoundError(f"{root}: {len(unpaired)} unpaired file(s): "
                                 f"{', '.join(unpaired)}; every low/ image needs a full/ one "
                                 "at the same path (--allow-unpaired leaves them out)")
    if unpaired and on_note is not None:
        on_note(f"{root}: left out {len(unpaired)} unpaired file(s): {', '.join(unpaired)}")
    pairs = []
    for rel in sorted(set(full) & set(low)):
        inp, tgt = read(low[rel]), read(full[rel])
        _check_task_image(inp, task)
        _check_task_image(tgt, task)
        want = (inp.num_slices, inp.size_yx[0] * task.scale, inp.size_yx[1] * task.scale)
        have = (tgt.num_slices, *tgt.size_yx)
        if want != have:
            raise GeometryMismatchError(
                f"{root / 'full' / rel}: target is {have[0]}x{have[1]}x{have[2]} (ZxYxX), the "
                f"input times scale {task.scale} is {want[0]}x{want[1]}x{want[2]}")
        pairs.append(VolumePair(rel, inp, tgt))
    return pairs


def _load_single(path: Path) -> list[tuple[str, Image]]:
    from ratcli.io import find_inputs, read

    return [(str(s.rel), read(s)) for s in find_inputs(path)]


def _synthetic(spec: DataSpec, task: TaskSpec) -> list[tuple[str, Image]]:
    """Phantom volumes as full-quality Images; volume i uses phantom seed spec.seed + i."""
    from ratcli import phantoms

    out = []
    for i in range(spec.volumes):
        seed = spec.seed + i
        if spec.synthetic == "ct":
            px = SYNTHETIC_CT_FOV_MM / spec.size
            img = Image(phantoms.ct_phantom(spec.size, spec.slices, seed), spacing=(px, px, 2.5),
                        domain=Domain.HU, modality="CT")
        elif spec.synthetic == "pet":
            img = Image(phantoms.pet_phantom(spec.size, spec.slices, seed),
                        spacing=(4.0, 4.0, 4.0), domain=Domain.ACTIVITY, modality="PT")
        else:
            tiles = [phantoms.he_tile(spec.size, seed * 1000 + z) for z in range(spec.slices)]
            img = Image(np.stack(tiles), spacing=(0.00025, 0.00025, 1.0), domain=Domain.RGB8,
                        modality="SM")
        out.append((f"synthetic/{spec.synthetic}-{seed}", img))
    return out


def _check_task_image(image: Image, task: TaskSpec) -> None:
    if image.is_rgb != (task.channels == 3):
        kind = "RGB" if image.is_rgb else "greyscale"
        raise InputFormatError(f"{image.source or 'data'}: task {task.name} cannot use this "
                               f"{kind} image")
    if not image.is_rgb and not np.isfinite(image.array).all():
        raise InputFormatError(f"{image.source or 'data'}: image holds NaN or infinite values")


def _crop_to_scale(image: Image, scale: int) -> Image:
    """Crop Y and X down to multiples of `scale` (top-left corner kept)."""
    H, W = image.size_yx
    if H % scale == 0 and W % scale == 0:
        return image
    return image.derived(image.array[:, : H - H % scale, : W - W % scale])


def _shrunk(target: Image, low: np.ndarray, scale: int) -> Image:
    """The low-resolution input Image of an SR pair: pixel spacing times `scale`."""
    sx, sy, sz = target.spacing
    return Image(low, spacing=(sx * scale, sy * scale, sz), origin=target.origin,
                 direction=target.direction, domain=target.domain, modality=target.modality,
                 source=target.source)


def _take(image: Image, z: slice) -> Image:
    """Slices z of `image`. A DICOM series keeps those slices' frames, so their true
    positions still choose the 2.5D neighbours (ratcli.inference.context)."""
    meta, dicom = image.meta, image.meta.get("dicom")
    frames = getattr(dicom, "frames", None)
    if is_dataclass(dicom) and frames is not None and len(frames) == image.num_slices:
        meta = {**meta, "dicom": replace(dicom, frames=frames[z])}
    return image.derived(image.array[z], meta=meta)
