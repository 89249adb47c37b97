"""``spikeforge demo``: the main job on the embedded default.

Interim version: no training and no RTL yet. It builds a hand-made integer network (one
non-firing layer whose weights are the 4-bit quantized mean image of each digit class, i.e. a
template matcher read out by membrane) and runs the digits test images through the integer
golden model. The trained network, export and RTL simulation replace it as they land.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from sw.golden import DenseLayer, Encoder, Network


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    parser.add_argument("--no-sim", action="store_true", help="stop after export (for synth)")


def template_network(pixels: torch.Tensor, labels: torch.Tensor, timesteps: int = 1) -> Network:
    """One direct-coded, non-firing layer: weight[c] = mean image of class c, centred, 4 bits."""
    means = torch.stack([pixels[labels == c].float().mean(0) for c in range(10)])
    centred = means - means.mean(0, keepdim=True)
    weight = torch.round(centred / centred.abs().max() * 7).to(torch.int64)
    layer = DenseLayer(weight=weight, bias=torch.zeros(10, dtype=torch.int64),
                       theta=[1] * timesteps, w_bits=4, v_bits=16, fires=False, name="templates")
    return Network([layer], timesteps, Encoder("direct", 4))


def run(args: argparse.Namespace) -> int:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    console = Console()
    digits = load_digits()
    pixels = torch.as_tensor(digits.data, dtype=torch.int64).clamp(max=15)
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        pixels, labels, test_size=360, stratify=labels, random_state=0)
    network = template_network(train_x, train_y)
    trace = network.run(test_x)
    accuracy = (trace.prediction == test_y).float().mean().item()
    table = Table(title="spikeforge demo (interim: hand-made template network, golden model only)")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("test images", str(len(test_y)))
    table.add_row("golden-model accuracy", f"{accuracy:.2%}")
    table.add_row("synaptic operations / image", f"{trace.layers[0].synops.float().mean():.0f}")
    table.add_row("RTL simulation", "not yet available")
    console.print(table)
    return 0
