"""Start-up time of `rat` next to `python -c "import torch"`, side by side in one run.

    python benchmarks/startup.py [--repeat 5]

Each command runs `--repeat` times as a fresh process, interleaved with the others so
that machine load hits all of them alike; the best time of each is reported as a
fraction of the best `import torch` time (issue 11 asks for under 10 %).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "import torch": ["-c", "import torch"],
    "rat --version": ["-m", "ratcli", "--version"],
    "rat --help": ["-m", "ratcli", "--help"],
    "rat weights list": ["-m", "ratcli", "weights", "list"],
    "rat denoise (usage error)": ["-m", "ratcli", "denoise"],
    "rat denoise --device gpu (bad value)": ["-m", "ratcli", "denoise", "x", "-o", "y",
                                             "--device", "gpu"],
    "rat denoise missing.nii.gz (bad input)": ["-m", "ratcli", "denoise", "missing.nii.gz",
                                               "-o", "out"],
    # sniffed by the format table (numpy, no torch)
    "rat denoise notes.txt (unsupported input)": ["-m", "ratcli", "denoise", "notes.txt",
                                                  "-o", "x.dcm"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    best = {name: float("inf") for name in COMMANDS}
    with tempfile.TemporaryDirectory() as cwd:
        with open(f"{cwd}/notes.txt", "w") as fh:
            fh.write("not an image\n")
        for _ in range(args.repeat):
            for name, argv in COMMANDS.items():
                t0 = time.perf_counter()
                subprocess.run([sys.executable, *argv], capture_output=True, cwd=cwd)
                best[name] = min(best[name], time.perf_counter() - t0)
    torch_s = best["import torch"]
    for name, seconds in best.items():
        print(f"{name:<42} {seconds:7.3f} s  {100 * seconds / torch_s:6.1f} % of import torch")


if __name__ == "__main__":
    main()
