"""`python -m ratcli.datasets SET OUT`: write one offline data set (see the package doc).

SET is ct, pet, he, heldout or all (all: OUT/ct, OUT/pet, OUT/he, OUT/heldout).
Prints the number of files written per split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ratcli.datasets.ct import write_ct_training
from ratcli.datasets.heldout import write_heldout
from ratcli.datasets.pathology import write_pathology_training
from ratcli.datasets.pet import write_pet_data

WRITERS = {"ct": write_ct_training, "pet": write_pet_data, "he": write_pathology_training,
           "heldout": write_heldout}


def main(argv: list[str] | None = None) -> dict[str, dict[str, int]]:
    parser = argparse.ArgumentParser(prog="python -m ratcli.datasets",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("set", choices=[*WRITERS, "all"])
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    chosen = list(WRITERS) if args.set == "all" else [args.set]
    counts = {}
    for name in chosen:
        out = args.out / name if args.set == "all" else args.out
        counts[name] = {split: len(paths) for split, paths in WRITERS[name](out).items()}
    return counts


if __name__ == "__main__":
    for name, splits in main().items():
        print(name, " ".join(f"{k}={v}" for k, v in splits.items()))
