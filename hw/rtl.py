"""Verilog generation for any spikeforge component, with the port metadata written beside it.

``generate_verilog(component, out_dir, name)`` writes ``<name>.v`` (Amaranth's Verilog backend;
nested members are flattened with ``__``, so ``inputs.payload`` becomes ``inputs__payload``) and
``<name>.json``::

    {"top": name, "clock": "clk", "reset": "rst", "parameters": {...},
     "ports": {"inputs__payload": {"direction": "input", "width": 17, "signed": false,
                                    "fields": {"addr": {"offset": 0, "width": 16, ...},
                                               "eot": {"offset": 16, "width": 1, ...}}},
               ...},
     "sha256": "<hash of the .v text>"}

Testbenches and the build cache key on ``sha256``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import data, wiring

__all__ = ["verilog_text", "port_metadata", "generate_verilog"]


def _describe_shape(shape) -> dict:
    """Width, signedness and, for data layouts, the field offsets of a port shape."""
    if isinstance(shape, data.Layout):
        info = {"width": shape.size, "signed": False}
        if isinstance(shape, data.ArrayLayout):
            info["elements"] = {"count": shape.length, **_describe_shape(shape.elem_shape)}
        else:
            info["fields"] = {
                str(name): {"offset": field.offset, **_describe_shape(field.shape)}
                for name, field in shape
            }
        return info
    if isinstance(shape, type) and hasattr(shape, "_amaranth_shape_"):  # shaped enums
        cast = Shape.cast(shape)
        return {"width": cast.width, "signed": cast.signed,
                "enum": {member.name: member.value for member in shape}}
    cast = Shape.cast(shape)
    return {"width": cast.width, "signed": cast.signed}


def port_metadata(component: wiring.Component) -> dict:
    """``{verilog_port_name: {"direction", "width", "signed", ...}}`` for every member."""
    ports = {}
    for path, member, _value in component.signature.flatten(component):
        name = "__".join(str(part) for part in path)
        direction = "input" if member.flow == wiring.In else "output"
        ports[name] = {"direction": direction, **_describe_shape(member.shape)}
    return ports


def verilog_text(component: wiring.Component, name: str) -> str:
    """The Verilog of ``component`` as a module called ``name``."""
    return verilog.convert(component, name=name, emit_src=False)


def generate_verilog(component: wiring.Component, out_dir, name: str, *,
                     text: str | None = None) -> Path:
    """Write ``<out_dir>/<name>.v`` and ``<out_dir>/<name>.json``; return the ``.v`` path.

    ``text`` is the Verilog if the caller already has it from :func:`verilog_text` (conversion
    takes about a second). Files are only rewritten when their content changes, so a build cache
    keyed on them stays valid.
    """
    if not name.isidentifier():
        raise ValueError(f"Module name must be a Verilog identifier, not {name!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if text is None:
        text = verilog_text(component, name)
    meta = {
        "top": name,
        "clock": "clk",
        "reset": "rst",
        "component": type(component).__qualname__,
        "parameters": getattr(component, "parameters", {}),
        "ports": port_metadata(component),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    v_path, json_path = out_dir / f"{name}.v", out_dir / f"{name}.json"
    for path, content in ((v_path, text), (json_path, json.dumps(meta, indent=2) + "\n")):
        if not path.exists() or path.read_text() != content:
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(content)
            tmp.replace(path)
    return v_path


def main(argv: list[str] | None = None) -> int:
    """``python -m spikeforge.hw.rtl``: Verilog and metadata of one layer engine configuration."""
    import argparse

    from spikeforge.hw.layer import LayerEngine

    parser = argparse.ArgumentParser(prog="python -m spikeforge.hw.rtl", description=main.__doc__)
    parser.add_argument("--fan-in", type=int, required=True)
    parser.add_argument("--fan-out", type=int, required=True)
    parser.add_argument("--timesteps", "-T", type=int, required=True)
    parser.add_argument("--lanes", "-P", type=int, default=8)
    parser.add_argument("--w-bits", type=int, default=8)
    parser.add_argument("--v-bits", type=int, default=16)
    parser.add_argument("--loadable", action="store_true",
                        help="add the weight and bias load ports (testbench variant)")
    parser.add_argument("--name", default="layer_engine")
    parser.add_argument("--out", default="build/rtl")
    args = parser.parse_args(argv)
    engine = LayerEngine(fan_in=args.fan_in, fan_out=args.fan_out, timesteps=args.timesteps,
                         lanes=args.lanes, w_bits=args.w_bits, v_bits=args.v_bits,
                         loadable=args.loadable)
    path = generate_verilog(engine, args.out, args.name)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
