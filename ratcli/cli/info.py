"""`rat info`: versions, devices and where each weight is loaded from, for bug reports."""

from __future__ import annotations

from ratcli.cli.app import app, echo, emit_json, guard, json_option


@app.command()
def info(as_json: bool = json_option("Print one JSON object.")) -> None:
    """Show versions of rat, torch, SAM and OpenSlide, devices, the weights search order
    and the file each weights name loads from."""
    with guard():
        from ratcli.info import environment_info

        data = environment_info()
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        if isinstance(value, list):
            echo(f"{key:>18}: " + f"\n{'':>20}".join(f"{i}. {v}" for i, v in
                                                     enumerate(value, 1)))
        elif isinstance(value, dict):
            echo(f"{key:>18}:")
            for name, where in value.items():
                echo(f"{name:>18}  {where}")
        else:
            echo(f"{key:>18}: {value}")
