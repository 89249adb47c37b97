"""An exported network on the integer golden model, over a labelled set: ``spikeforge eval``.

No RTL and no hardware: the verified export is run batch by batch through
:meth:`spikeforge.sw.golden.Network.run` (exact integer arithmetic at BLAS speed), so it works
for every network the golden model runs, dense or convolutional, whatever encoder. It measures
accuracy, the confusion matrix, synaptic operations (docs/contract.md) per image and per layer,
and spikes per layer and image::

    import spikeforge as sf
    from spikeforge.sw.data import load_dataset
    pixels, labels = load_dataset("digits", split="test")
    report = sf.evaluate("out/export", pixels, labels)
    report.accuracy, report.synops_mean, [layer.spikes_mean for layer in report.layers]
    save_report(report, "out/eval")        # confusion.png and eval.json

``spikeforge eval`` prints :func:`print_report` and writes :func:`save_report` into
:func:`default_out_dir` unless told otherwise.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from spikeforge.sw.export import MANIFEST_NAME, load_manifest
from spikeforge.sw.golden import ContractError, Network
from spikeforge.sw.plots import confusion_png

__all__ = [
    "EvalError",
    "LayerEval",
    "EvalReport",
    "evaluate_network",
    "evaluate_export",
    "default_out_dir",
    "save_report",
    "print_report",
]

#: Images per golden-model batch: bounds the memory of a convolution's im2col and spike tensors.
BATCH_SIZE = 256


class EvalError(ValueError):
    """Images or labels that do not fit the network; the message says which and why."""


@dataclass(frozen=True)
class LayerEval:
    """One layer's activity over the evaluated images (means are per image)."""

    name: str
    kind: str  # "dense", "conv" or "sumpool"
    fan_out: int  # neurons (for a pooling layer: outputs)
    synops_mean: float  # synaptic operations per image (0 for pooling)
    spikes_mean: float  # spikes per image (pooling: pooled events; a non-firing layer: 0)
    synops_total: int
    spikes_total: int
    fires: bool = True  # False: a non-firing readout layer (read out by its membrane)


@dataclass
class EvalReport:
    """What :func:`evaluate_network` measured. ``confusion[true, predicted]`` counts images."""

    images: int
    correct: int
    layers: list[LayerEval]
    confusion: torch.Tensor  # int64[C, C], C = max(n_outputs, largest label + 1)
    predictions: torch.Tensor  # int64[N]
    labels: torch.Tensor  # int64[N]
    synops: torch.Tensor  # int64[N], every layer's synaptic operations of each image
    wall_seconds: float
    timesteps: int
    encoder: str
    export_dir: Path | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / self.images if self.images else 0.0

    @property
    def synops_mean(self) -> float:
        return float(self.synops.double().mean()) if self.images else 0.0

    @property
    def spikes_mean(self) -> float:
        """Spikes per image of the neuron layers (pooled events not counted twice)."""
        return sum(layer.spikes_mean for layer in self.layers if layer.kind != "sumpool")

    @property
    def images_per_second(self) -> float:
        return self.images / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    def as_dict(self) -> dict:
        """The numbers, JSON-able (``eval.json``)."""
        return {
            "export": None if self.export_dir is None else str(self.export_dir),
            "images": self.images, "correct": self.correct, "accuracy": self.accuracy,
            "timesteps": self.timesteps, "encoder": self.encoder,
            "synops_per_image": self.synops_mean, "spikes_per_image": self.spikes_mean,
            "layers": [{"name": x.name, "kind": x.kind, "fan_out": x.fan_out,
                        "synops_per_image": x.synops_mean, "spikes_per_image": x.spikes_mean,
                        "synops_total": x.synops_total, "spikes_total": x.spikes_total,
                        "fires": x.fires}
                       for x in self.layers],
            "confusion": self.confusion.tolist(),
            "wall_seconds": self.wall_seconds,
            "metadata": self.metadata,
        }


def _as_int(name: str, value, dims: int) -> torch.Tensor:
    tensor = torch.as_tensor(value)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise EvalError(f"{name} must hold integers, not {tensor.dtype}")
    if tensor.dim() != dims:
        raise EvalError(f"{name} must have {dims} dimension(s), got shape {tuple(tensor.shape)}")
    return tensor.to(torch.int64)


def evaluate_network(network: Network, pixels, labels, *,
                     batch_size: int = BATCH_SIZE) -> EvalReport:
    """Run ``pixels`` (``int[N, n_inputs]``) through ``network`` and score them against
    ``labels`` (``int[N]``, ``>= 0``), ``batch_size`` images at a time.

    Raises :class:`EvalError` (one line) when the images do not have the network's input size,
    a pixel lies outside the encoder's range, or the labels do not match the images.
    """
    pixels, labels = _as_int("pixels", pixels, 2), _as_int("labels", labels, 1)
    if pixels.shape[1] != network.n_inputs:
        raise EvalError(f"the images have {pixels.shape[1]} pixels each but the network takes "
                        f"{network.n_inputs} inputs (a dataset for another network?)")
    if len(labels) != len(pixels):
        raise EvalError(f"{len(pixels)} images but {len(labels)} labels")
    if len(labels) and int(labels.min()) < 0:
        raise EvalError(f"labels must be >= 0, got {int(labels.min())}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EvalError(f"batch_size must be an integer >= 1, not {batch_size!r}")
    pixel_max = network.encoder.pixel_max
    if len(pixels) and (int(pixels.min()) < 0 or int(pixels.max()) > pixel_max):
        raise EvalError(f"pixels must lie in 0..{pixel_max} (the network's "
                        f"{network.encoder.pixel_bits}-bit {network.encoder.kind.value} "
                        f"encoder), got {int(pixels.min())}..{int(pixels.max())}")
    n_layers = len(network.layers)
    synops = torch.zeros(len(pixels), dtype=torch.int64)
    layer_synops, layer_spikes = [0] * n_layers, [0] * n_layers
    predictions = []
    start = time.perf_counter()
    for first in range(0, len(pixels), batch_size):
        try:
            trace = network.run(pixels[first:first + batch_size])
        except ContractError as error:
            raise EvalError(str(error)) from None
        predictions.append(trace.prediction)
        for k, layer_trace in enumerate(trace.layers):
            synops[first:first + len(trace.prediction)] += layer_trace.synops
            layer_synops[k] += int(layer_trace.synops.sum())
            layer_spikes[k] += int(layer_trace.spikes.sum())
    wall = time.perf_counter() - start
    predictions = torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.int64)
    classes = max(network.n_outputs, int(labels.max()) + 1 if len(labels) else 0)
    confusion = torch.zeros((classes, classes), dtype=torch.int64)
    confusion.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
    count = max(len(pixels), 1)
    layers = [LayerEval(name=layer.name, kind=layer.kind, fan_out=layer.fan_out,
                        synops_mean=layer_synops[k] / count, spikes_mean=layer_spikes[k] / count,
                        synops_total=layer_synops[k], spikes_total=layer_spikes[k],
                        fires=getattr(layer, "fires", True))
              for k, layer in enumerate(network.layers)]
    return EvalReport(images=len(pixels), correct=int((predictions == labels).sum()),
                      layers=layers, confusion=confusion, predictions=predictions,
                      labels=labels, synops=synops, wall_seconds=wall,
                      timesteps=network.timesteps, encoder=network.encoder.kind.value)


def evaluate_export(export_dir, pixels, labels, *, batch_size: int = BATCH_SIZE) -> EvalReport:
    """:func:`evaluate_network` on the network of the export folder ``export_dir``.

    The export is loaded and verified (:func:`spikeforge.sw.export.load_manifest`: an
    :class:`~spikeforge.sw.export.ExportError` if it is missing or damaged). Works for every
    export, including those the hardware cannot run (:func:`spikeforge.sw.export.hardware_support`).
    """
    manifest = load_manifest(export_dir)
    report = evaluate_network(manifest.network, pixels, labels, batch_size=batch_size)
    report.export_dir = Path(export_dir)
    report.metadata = dict(manifest.metadata)
    return report


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "data"


def default_out_dir(export_dir, dataset: str, split: str, data_root=None) -> Path:
    """Where ``spikeforge eval`` writes without ``--out``: beside the export,
    ``<export>-eval-<dataset>-<split>-<key>``, ``key`` 8 hex digits of the SHA-256 of the
    export's manifest, the resolved dataset (name, data root) and the split. Two runs share a
    folder only when they evaluate the same export on the same data, so a run never overwrites
    another's figures; the same command run again replaces its own.
    """
    export_dir = Path(export_dir).resolve()
    try:
        manifest = (export_dir / MANIFEST_NAME).read_bytes()
    except OSError:
        manifest = b""
    root = "" if data_root is None else str(Path(data_root).resolve())
    named = str(Path(dataset).resolve()) if Path(dataset).is_dir() else dataset
    key = hashlib.sha256(b"\0".join([manifest, str(export_dir).encode(), named.encode(),
                                     root.encode(), split.encode()])).hexdigest()[:8]
    label = Path(dataset).name if Path(dataset).is_dir() else dataset
    return export_dir.parent / f"{export_dir.name}-eval-{_slug(label)}-{_slug(split)}-{key}"


def save_report(report: EvalReport, out_dir, *, title: str = "") -> tuple[Path, Path]:
    """Write ``confusion.png`` and ``eval.json`` (:meth:`EvalReport.as_dict`) into ``out_dir``
    (created); return their paths."""
    out = Path(out_dir)
    png = confusion_png(report.confusion, out / "confusion.png",
                        title=title or f"golden model: {report.accuracy:.2%} of "
                                       f"{report.images} images")
    summary = out / "eval.json"
    summary.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    return png, summary


def print_report(report: EvalReport, console: Console, title: str) -> None:
    """The summary and the per-layer activity as two rich tables."""
    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("images", f"{report.images:,}")
    table.add_row("golden-model accuracy", f"{report.accuracy:.2%} ({report.correct:,})")
    table.add_row("T, encoder", f"{report.timesteps}, {report.encoder}")
    table.add_row("synaptic operations / image", f"{report.synops_mean:,.1f}")
    table.add_row("spikes / image (neuron layers)", f"{report.spikes_mean:,.1f}")
    table.add_row("golden model: images / s", f"{report.images_per_second:,.0f}")
    console.print(table)
    layers = Table(title="per layer (mean per image)")
    for name, justify in (("layer", "left"), ("kind", "left"), ("outputs", "right"),
                          ("SynOps / image", "right"), ("spikes / image", "right"),
                          ("spikes / output", "right")):
        layers.add_column(name, justify=justify)
    for k, layer in enumerate(report.layers):
        per = layer.spikes_mean / layer.fan_out if layer.fan_out else 0.0
        spikes = f"{layer.spikes_mean:,.1f}" + (" (pooled)" if layer.kind == "sumpool" else "")
        if not layer.fires:
            spikes = "membrane readout"
        layers.add_row(f"{k} {layer.name}", layer.kind, f"{layer.fan_out:,}",
                       f"{layer.synops_mean:,.1f}", spikes, f"{per:.3f}")
    console.print(layers)
