"""Starting a 2.5D model from 2D weights (`rat train --init` with `context_slices` > 0).

A 2.5D model (RATConfig.context_slices = k) differs from the 2D one only in its stem,
which sees 2k+1 slices instead of one. `inflate_2d` puts the 2D stem's weights on the
centre slice's channels and zeros on the neighbours', so the 2.5D model starts out
computing the 2D model (to float rounding; tests/test_context_slices.py) and training
only adds what the neighbours bring: a comparison of 2D and 2.5D at equal training time
can fine-tune both from the same shipped weights.

Stem input layout (RegionAttentionTransformer.forward): the 2k+1 slices of c channels,
slice z-k first, then, with input_detail, one detail channel per input channel in the
same order: [x(z-k) .. x(z+k), d(z-k) .. d(z+k)].
"""

from __future__ import annotations

import torch

from ratcli.models.rat import RATConfig

__all__ = ["inflate_2d"]


def inflate_2d(state: dict[str, torch.Tensor], config: RATConfig) -> dict[str, torch.Tensor]:
    """The weights `state` of the 2D model (context_slices 0) for the same model with
    `config.context_slices` = k: stem.weight (C1, c * d, 3, 3) -> (C1, (2k+1) * c * d,
    3, 3), d = 2 with the detail channel, else 1; the 2D weights on the centre slice's
    channels, zeros elsewhere. Every other tensor is shared unchanged."""
    k, c = config.context_slices, config.in_channels
    slices = 2 * k + 1
    w = state["stem.weight"]  # (C1, c * d, 3, 3)
    parts = 2 if config.input_detail else 1  # the slices' intensities, then their details
    if w.shape[1] != c * parts:
        raise ValueError(f"stem.weight has {w.shape[1]} input channels, a 2D model of this "
                         f"config has {c * parts}")
    out = w.new_zeros(w.shape[0], slices * c * parts, *w.shape[2:])
    for part in range(parts):
        src = slice(part * c, (part + 1) * c)
        dst = part * slices * c + k * c  # the centre slice within this part
        out[:, dst : dst + c] = w[:, src]
    return {**state, "stem.weight": out}
