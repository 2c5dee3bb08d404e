"""One line saying which program, task and weights made an output (for file headers)."""

from __future__ import annotations

__all__ = ["describe_provenance"]


def describe_provenance(provenance: dict | None, *, limit: int = 1024) -> str:
    """'rat <version> task=<task> weights=<name> guard=<guard> sha256=<hex>' from
    provenance = {"task", "weights", "weights_sha256", "guard"} (keys optional),
    cut to `limit` characters (DICOM DerivationDescription holds 1024)."""
    from ratcli import __version__

    p = provenance or {}
    parts = [f"rat {__version__}"]
    # the guard before the long hash: NIfTI's descrip keeps only 80 characters
    for key, label in (("task", "task"), ("weights", "weights"), ("guard", "guard"),
                       ("weights_sha256", "sha256")):
        if p.get(key):
            parts.append(f"{label}={p[key]}")
    return " ".join(parts)[:limit]
