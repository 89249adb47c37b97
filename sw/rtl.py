"""Verilog of the network accelerator of an export folder, with its port metadata.

:func:`write_rtl` is what ``spikeforge rtl`` does: load and verify the export
(:func:`spikeforge.sw.export.load_manifest`), elaborate the
:class:`~spikeforge.hw.accelerator.NetworkAccelerator` it describes, and write ``<name>.v`` and
``<name>.json`` with :func:`spikeforge.hw.rtl.generate_verilog` (ports, field offsets, the
elaboration parameters and the Verilog's SHA-256).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spikeforge.hw.accelerator import NetworkAccelerator
from spikeforge.hw.layer import check_lanes
from spikeforge.hw.rtl import generate_verilog
from spikeforge.sw.export import load_manifest, require_hardware_support

__all__ = ["RtlFiles", "write_rtl"]


@dataclass(frozen=True)
class RtlFiles:
    """What :func:`write_rtl` wrote: the Verilog, its metadata JSON, and the accelerator's
    elaboration parameters (``n_layers``, ``n_inputs``, ``n_outputs``, ``timesteps``,
    ``lanes``, ...; see ``NetworkAccelerator.parameters``)."""

    verilog: Path
    metadata: Path
    parameters: dict


def write_rtl(export_dir, out_dir=None, *, name: str = "spikeforge_accel",
              lanes: int | None = None, taps: bool = False) -> RtlFiles:
    """Write ``<out_dir>/<name>.v`` and ``<out_dir>/<name>.json`` for the export in ``export_dir``.

    ``out_dir`` defaults to ``rtl`` beside the export folder; ``lanes`` overrides the export's
    lane count; ``taps`` adds the testbench observation ports. The export is verified on load:
    a damaged one raises :class:`~spikeforge.sw.export.ExportError` before anything is
    elaborated, and so does one the hardware cannot run
    (:class:`~spikeforge.sw.export.UnsupportedNetworkError`, naming the layer: a stride-2
    convolution, say); a bad ``name`` or lane count raises :class:`ValueError`. Files whose
    content is unchanged are not rewritten.
    """
    out = Path(out_dir) if out_dir is not None else Path(export_dir).resolve().parent / "rtl"
    manifest = load_manifest(export_dir)
    require_hardware_support(manifest.network, str(export_dir))
    lanes = check_lanes(manifest.lanes if lanes is None else lanes)  # 0 is not 'the default'
    accelerator = NetworkAccelerator(manifest.network, lanes, taps=taps)
    verilog = generate_verilog(accelerator, out, name)
    return RtlFiles(verilog=verilog, metadata=verilog.with_suffix(".json"),
                    parameters=accelerator.parameters)
