"""Figures people would rather see than read: spike rasters and confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def spike_raster(frames: torch.Tensor, layer_spikes: Sequence[torch.Tensor], path,
                 *, layer_names: Sequence[str] | None = None, title: str = "",
                 readout_membranes: torch.Tensor | None = None) -> Path:
    """Write a raster of one image: input frames ``int[T, n_in]`` and each layer's ``int[T, n]``.

    One panel per stage, time on the x axis, neuron index on the y axis, a dot per spike
    (input panel: a dot per non-zero input, so direct coding shows as a full band). If the last
    layer is read out by membrane, pass its end-of-timestep membranes ``int[T, n]`` as
    ``readout_membranes``: its panel then shows them as a heat map instead of (absent) spikes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [("input", frames)] + [
        (layer_names[k] if layer_names else f"layer {k}", spikes)
        for k, spikes in enumerate(layer_spikes)]
    fig, axes = plt.subplots(1, len(stages), figsize=(3.2 * len(stages), 3.6), squeeze=False)
    for index, (ax, (name, spikes)) in enumerate(zip(axes[0], stages, strict=True)):
        if readout_membranes is not None and index == len(stages) - 1:
            image = ax.imshow(readout_membranes.T.numpy(), aspect="auto", origin="lower",
                              cmap="viridis", interpolation="nearest")
            fig.colorbar(image, ax=ax, fraction=0.08)
            ax.set_xlabel("timestep")
            ax.set_title(f"{name} membrane (read out)", fontsize=9)
            continue
        t, n = (spikes != 0).nonzero(as_tuple=True)
        ax.scatter(t.numpy(), n.numpy(), s=6, marker="|", color="black")
        ax.set_xlim(-0.5, spikes.shape[0] - 0.5)
        ax.set_ylim(-0.5, spikes.shape[1] - 0.5)
        ax.set_xlabel("timestep")
        ax.set_title(f"{name} ({int((spikes != 0).sum())} events)", fontsize=9)
    axes[0][0].set_ylabel("neuron")
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path, dpi=120)
    plt.close(fig)
    return Path(path)


def confusion_png(confusion: torch.Tensor, path, *, title: str = "") -> Path:
    """Write the confusion matrix ``int[C, C]`` (rows true, columns predicted) as a PNG.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend switch).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = confusion.to(torch.int64)
    classes = matrix.shape[0]
    size = min(2.0 + 0.55 * classes, 14.0)
    fig = Figure(figsize=(size + 1.2, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(matrix.numpy(), cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if classes <= 30:
        ticks = list(range(classes))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        high = int(matrix.max()) if matrix.numel() else 0
        for true in range(classes):
            for predicted in range(classes):
                value = int(matrix[true, predicted])
                if value:
                    ax.text(predicted, true, str(value), ha="center", va="center", fontsize=8,
                            color="white" if value > high / 2 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path, dpi=110)


def _save(fig, path, *, dpi: int) -> Path:
    """Lay ``fig`` out and write it to ``path`` as a PNG, making the folder."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
