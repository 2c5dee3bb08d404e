"""Option values coerced without pydantic.

typer (0.2x and later) converts every option value through a pydantic TypeAdapter, and
importing pydantic costs about 0.3 s: more than the rest of `rat`'s start-up together,
paid by every call that parses an option, usage errors included. rat's options are
plain bool, str, int, float, Path and StrEnum values (or lists of them); those are converted
here, exactly as the adapter would for these types. Any other annotation, or a typer
whose internals differ, keeps typer's own coercion (`install` then changes nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

__all__ = ["install"]


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    return int(str(value).strip())


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    return float(value)


def _to_str(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "t", "yes", "y", "on"):
        return True
    if text in ("0", "false", "f", "no", "n", "off"):
        return False
    raise ValueError(value)


def _to_path(value: Any) -> Path:
    return value if isinstance(value, Path) else Path(value)


_PLAIN: dict[type, tuple[Callable[[Any], Any], str]] = {
    bool: (_to_bool, "boolean"),
    str: (_to_str, "text"),
    int: (_to_int, "integer"),
    float: (_to_float, "number"),
    Path: (_to_path, "path"),
}


def converter(annotation: Any) -> tuple[Callable[[Any], Any], str] | None:
    """(convert, what) for a plain annotation or a list of one; None for anything else."""
    if get_origin(annotation) is list:
        (annotation,) = get_args(annotation) or (None,)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        enum = annotation

        def to_enum(value: Any) -> Any:
            return value if isinstance(value, enum) else enum(str(value))

        return to_enum, f"choice ({', '.join(str(m.value) for m in enum)})"
    return _PLAIN.get(annotation) if isinstance(annotation, type) else None


def install() -> None:
    """Route rat's plain options past typer's pydantic adapters (see the module doc)."""
    try:
        from typer import _coercion, core
        from typer._click.exceptions import BadParameter
    except ImportError:
        return
    base = getattr(core, "_TyperParameter", None)
    runtime = getattr(_coercion, "RuntimeParam", None)
    original = getattr(base, "get_runtime_param", None)
    if base is None or runtime is None or original is None or getattr(original, "_rat", 0):
        return

    @dataclass(frozen=True)
    class PlainParam(runtime):  # type: ignore[misc, valid-type]
        convert: Any = None
        what: str = ""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if isinstance(value, (list, tuple)):
                return [self._one(v, param, ctx) for v in value]
            return self._one(value, param, ctx)

        def _one(self, value: Any, param: Any, ctx: Any) -> Any:
            try:
                return self.convert(value)
            except (TypeError, ValueError):
                raise BadParameter(f"{value!r} is not a valid {self.what}.", ctx=ctx,
                                   param=param) from None

    def get_runtime_param(self: Any) -> Any:
        if getattr(self, "_runtime_param", None) is None:
            desc = getattr(self, "type_descriptor", None)
            found = None
            info = getattr(desc, "parameter_info", None)
            ranged = any(getattr(info, k, None) is not None for k in ("min", "max"))
            if desc is not None and desc.file_annotation is None and not ranged:
                found = converter(desc.annotation)
            if found is not None:
                self._runtime_param = PlainParam(
                    parameter_info=desc.parameter_info, annotation=desc.annotation,
                    convert=found[0], what=found[1])
        return original(self)

    get_runtime_param._rat = 1  # type: ignore[attr-defined]
    base.get_runtime_param = get_runtime_param
