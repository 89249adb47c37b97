"""The main job on the embedded default (``spikeforge demo``, ``make demo``), as one call.

:func:`run_demo` does, in a folder:

1. train the default network on the digits data (``spikeforge.sw.train``, T = 4, 4-bit
   weights, rate-coded input, which the hardware encoder implements; :func:`demo_config`);
2. export it: weight ROMs (hex, coe, mif) and the manifest, verified on load;
3. run every test image through the exported network on the RTL in Verilator and compare
   predictions, scores, counters, cycle counts and (for the first images) every spike and
   membrane with the golden model, writing a spike raster of the first image;

and returns a :class:`DemoResult`, which ``spikeforge demo`` prints as its report. A finished
step is not redone: an existing checkpoint is reused unless ``retrain``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from spikeforge.sw.data import load_dataset
from spikeforge.sw.export import export_network
from spikeforge.sw.golden import Network
from spikeforge.sw.simulate import SimSummary, simulate_export
from spikeforge.sw.train import TrainConfig, integer_network, load_checkpoint, train

__all__ = ["DEMO_LANES", "DemoResult", "demo_config", "run_demo"]

#: Lanes per layer engine of the demo accelerator.
DEMO_LANES = 8


def demo_config(epochs: int | None = None, arch: str = "mlp") -> TrainConfig:
    """The demo's training configuration: the defaults with the rate encoder (the hardware
    implements it) and architecture ``arch`` (``mlp``, the default network, or ``conv``, the
    convolutional preset; :mod:`spikeforge.sw.train.arch`), ``epochs`` overriding the
    method's epoch count."""
    config = TrainConfig(encoder="rate", arch=arch)
    if epochs is not None:
        config.epochs = epochs
    return config


@dataclass
class DemoResult:
    """What :func:`run_demo` made and measured.

    ``trained`` is false when an existing checkpoint was reused (``train_seconds`` is then the
    time to find it); ``golden_accuracy`` is the integer golden model's on the ``test_images``
    digits test images; ``summary`` is the RTL run (``None`` when ``sim`` was false) and
    ``raster`` its spike raster; ``metrics`` are the trainer's (``test_float_ann``,
    ``test_int``, ...)."""

    out: Path
    checkpoint: Path
    export_dir: Path
    config: TrainConfig
    network: Network
    metrics: dict
    trained: bool
    train_seconds: float
    golden_accuracy: float
    test_images: int
    summary: SimSummary | None = None
    raster: Path | None = None


def run_demo(out="out/demo", *, lanes: int = DEMO_LANES, epochs: int | None = None,
             trace: int = 50, retrain: bool = False, sim: bool = True, progress: bool = True,
             console: Console | None = None, arch: str = "mlp") -> DemoResult:
    """Train (or reuse ``out/checkpoint.pt``), export to ``out/export`` at ``lanes`` lanes and,
    with ``sim``, run the digits test set on the RTL (``trace`` images compared in full,
    raster in ``out/raster.png``).

    ``progress`` prints each step's heading and progress bars on ``console`` (a new one by
    default). A mismatch between the RTL and the golden model is not an exception: see
    ``result.summary.mismatches``. Training and export errors propagate
    (:class:`~spikeforge.sw.train.ConfigError`, :class:`~spikeforge.sw.export.ExportError`, ...).
    """
    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    config = demo_config(epochs, arch)

    def say(*objects) -> None:
        if progress:
            console.print(*objects)

    if progress:
        console.rule("1. train")
    start = time.perf_counter()
    trained = retrain or not checkpoint.exists()
    if not trained and load_checkpoint(checkpoint).config.arch != config.arch:
        trained = True  # a checkpoint of another architecture is not reused
    if not trained:
        say(f"reusing {checkpoint} (--retrain or retrain=True to train again)")
    elif progress:
        say(f"method {config.method}, T={config.timesteps}, {config.w_bits}-bit weights, "
            f"{config.encoder} encoder, up to {config.epochs} epochs")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                      console=console) as bar:
            tasks: dict[str, int] = {}

            def report(record: dict) -> None:
                phase = record["phase"]
                if phase not in tasks:
                    tasks[phase] = bar.add_task(f"{phase} epochs", total=record["epochs"],
                                                status="")
                bar.update(tasks[phase], completed=record["epoch"],
                           status=f"loss {record['train_loss']:.4f}  "
                                  f"val acc {record['val_acc']:.2%}")

            train(config, out=checkpoint, progress=report)
    else:
        train(config, out=checkpoint)
    train_seconds = time.perf_counter() - start
    network = integer_network(checkpoint)
    metrics = dict(load_checkpoint(checkpoint).metrics)

    if progress:
        console.rule("2. export")
    export_dir = export_network(network, out / "export", lanes=lanes,
                                metadata={"source": "spikeforge demo", "method": config.method})
    say(f"wrote {export_dir}")

    pixels, labels = load_dataset("digits", split="test")
    golden_accuracy = (network.predict(pixels) == labels).double().mean().item()
    result = DemoResult(out=out, checkpoint=checkpoint, export_dir=export_dir, config=config,
                        network=network, metrics=metrics, trained=trained,
                        train_seconds=train_seconds, golden_accuracy=golden_accuracy,
                        test_images=len(labels))
    if not sim:
        return result

    if progress:
        console.rule("3. simulate on the RTL")
    result.raster = out / "raster.png"
    result.summary = simulate_export(export_dir, pixels=pixels, labels=labels, trace=trace,
                                     raster=result.raster, progress=progress, console=console)
    return result
