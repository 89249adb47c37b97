"""The training driver: phases, epochs, evaluation, checkpoints, resume, data parallelism.

A run is a list of phases (``ann`` pre-training, then the method's own phase or, for PTL, one
phase per converted layer). After every epoch the whole state (model, optimizer, best model so
far, patience counter, history) is written atomically, so a run killed at any point resumes
from its last finished epoch and ends with the same result as an uninterrupted run: batch
order comes from a generator seeded by ``(seed, phase, epoch)``, not from global RNG state.

Data parallelism: when ``torch.distributed`` is initialised (``torchrun``, or
:func:`init_distributed` from ``WORLD_SIZE``/``RANK`` in the environment), every rank takes an
interleaved share of each global batch and the gradients are all-reduced (summed) with each
rank's loss scaled so that the result is the gradient of the mean loss over the *global*
batch: training on N processes gives the same parameters as one process, up to float
rounding. Only rank 0 writes checkpoints and prints.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..data import PIXEL_BITS, load_dataset
from ..golden import Network
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    network_to_dict,
    save_checkpoint,
)
from .config import ConfigError, TrainConfig
from .model import SpikingNet
from .neurons import nu_params_from_thresholds

__all__ = ["train", "run_training", "evaluate", "Data", "load_data", "init_distributed",
           "default_checkpoint", "train_baseline", "check_out_path"]

DEFAULT_OUT = Path("out") / "train"
#: Images per forward pass when a whole split is evaluated (bounds memory for conv networks).
EVAL_CHUNK = 500


def default_checkpoint(config: TrainConfig) -> Path:
    """``out/train/<method>[-<arch>]-T<T>-w<bits>-s<seed>.pt`` (no arch part for ``mlp``)."""
    arch = "" if config.arch == "mlp" else f"-{config.arch}"
    bits = config.w_bits_text.replace(",", "-")
    return DEFAULT_OUT / f"{config.method}{arch}-T{config.timesteps}-w{bits}-s{config.seed}.pt"


def check_out_path(out: Path) -> None:
    """Refuse a checkpoint path that can never be written: a folder, or a path below a file."""
    if out.is_dir():
        raise ConfigError(f"out {str(out)!r} is a folder; give a checkpoint file, e.g. "
                          f"{str(out / 'run.pt')!r}")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"out {str(out)!r} lies below {str(parent)!r}, which is a "
                                  "file, not a folder")
            break


@dataclass
class Data:
    """Integer pixels and labels of the three splits."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]

    @property
    def n_in(self) -> int:
        return self.train[0].shape[1]

    @property
    def n_out(self) -> int:
        return int(max(int(s[1].max()) for s in (self.train, self.val, self.test))) + 1

    #: ``(C, H, W)`` of one image; None: a square one-channel image of ``n_in`` pixels
    input_shape = None


def load_data(config: TrainConfig) -> Data:
    return Data(*(load_dataset(config.dataset, config.data_root, split)
                  for split in ("train", "val", "test")))


# --- distributed ------------------------------------------------------------------------------

def init_distributed() -> bool:
    """Initialise ``torch.distributed`` from torchrun's environment if it asks for >1 process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")  # training runs on the CPU; gloo spans machines too
        return True
    return False


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _allreduce_grads(params) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


# --- evaluation ---------------------------------------------------------------------------------

@torch.no_grad()
def _logits(model: SpikingNet, frames: torch.Tensor, mode: str, **kwargs):
    """``model(frames, mode)`` in chunks of :data:`EVAL_CHUNK` images; in ``hardware`` mode
    also the synaptic operations ``[B, layers]`` of the golden trace."""
    logits, synops = [], []
    for start in range(0, len(frames), EVAL_CHUNK):
        logits.append(model(frames[start: start + EVAL_CHUNK], mode=mode, **kwargs))
        if mode == "hardware":
            synops.append(model.stats["synops"])
    return torch.cat(logits), (torch.cat(synops) if synops else None)


@torch.no_grad()
def evaluate(model: SpikingNet, pixels: torch.Tensor, labels: torch.Tensor, mode: str) -> dict:
    """Accuracy (and synaptic operations per inference in ``hardware`` mode)."""
    frames = model.encode(pixels)
    model.eval()
    logits, synops = _logits(model, frames, mode)
    if mode == "hardware":
        best = logits.max(1, keepdim=True).values  # ties to the lowest index, as the contract
        idx = torch.arange(logits.shape[1])
        pred = torch.where(logits == best, idx, logits.shape[1]).min(1).values
    else:
        pred = logits.argmax(1)
    out = {"acc": float((pred == labels).float().mean())}
    if mode == "hardware":
        out["synops"] = float(synops.to(torch.float64).sum(1).mean())
    else:
        out["loss"] = float(F.cross_entropy(logits, labels))
    return out


# --- phases ---------------------------------------------------------------------------------------

def _phases(config: TrainConfig, n_layers: int) -> list[tuple[str, int]]:
    m = config.method
    if m == "radix":
        return [("radix", config.epochs)]
    phases = [("ann", config.ann_epochs)] if config.ann_epochs and not config.init_from else []
    if m == "ann":
        return phases
    if m == "qrelu":
        return [*phases, ("qrelu", config.epochs)]
    if m == "ptl":  # one stage per layer, each up to `epochs` epochs under the patience rule
        return phases + [(f"ptl{layer}", config.epochs) for layer in range(n_layers)]
    return [*phases, ("snn", config.epochs)]


def _mode(phase: str) -> str:
    return {"ann": "ann", "qrelu": "qann", "radix": "ann"}.get(phase, "snn")


@torch.no_grad()
def calibrate_thresholds(model: SpikingNet, pixels: torch.Tensor, percentile: float,
                         layers: list[int] | None = None) -> None:
    """Threshold LayerNorm (seed 003): hidden layer ``l``'s threshold becomes the
    ``percentile`` of its ReLU activations on ``pixels``, where its input is the *spiking*
    output of the layers before it (the network as converted so far). ``layers`` default: all,
    in order."""
    frames = model.encode(pixels)
    for layer in range(len(model.neurons)) if layers is None else layers:
        if layer >= len(model.neurons):
            continue
        parts = []
        for start in range(0, len(frames), EVAL_CHUNK):
            chunk = frames[start: start + EVAL_CHUNK]
            if layer == 0:
                x = chunk.mean(1) * model.input_amplitude()
            else:
                model(chunk, mode="snn", spiking_upto=layer - 1)
                count = model.stats["counts"][layer - 1]
                x = count * model.neurons[layer - 1].amplitude() / model.timesteps
            parts.append(torch.relu(model.ann_layer(layer, x)).reshape(-1))
        z = torch.cat(parts)
        theta = float(np.percentile(z.numpy(), percentile))
        neuron = model.neurons[layer]
        value = torch.tensor(max(theta, 1e-3))
        if neuron.kind == "nu":
            neuron.p.copy_(nu_params_from_thresholds(value.expand(model.timesteps)))
        else:
            neuron.theta.copy_(value)


def _init_from(model: SpikingNet, path) -> None:
    """Copy the float weights and biases of another checkpoint (same layer sizes)."""
    source = load_checkpoint(path)
    for key, value in source.model_state.items():
        if not key.startswith("linears."):
            continue
        mine = model.state_dict().get(key)
        if mine is None or mine.shape != value.shape:
            raise CheckpointError(f"init_from {str(path)!r}: {key} has shape "
                                  f"{tuple(value.shape)}, this network needs "
                                  f"{None if mine is None else tuple(mine.shape)}")
        with torch.no_grad():
            dict(model.named_parameters())[key].copy_(value)


def _loss(model: SpikingNet, frames, labels, phase: str, config: TrainConfig, stage: int | None):
    if phase.startswith("ptl"):
        logits = model(frames, mode="snn", spiking_upto=stage)
    else:
        logits = model(frames, mode=_mode(phase))
    loss = F.cross_entropy(logits, labels, reduction="sum")
    if phase == "qrelu" and config.synop_target is not None:
        synops = model.synops_estimate(model.stats["acts"])  # from the hidden spike counts
        s0 = config.synop_target
        loss = loss + config.synop_weight * (((synops - s0) / s0) ** 2).sum()
    return loss


def _freeze_for_stage(model: SpikingNet, stage: int) -> list[torch.nn.Parameter]:
    """PTL stage ``stage``: layers before it are frozen SNN layers, its own threshold is fixed
    by Threshold LayerNorm; the rest trains."""
    params = []
    for layer, lin in enumerate(model.linears):
        if layer >= stage:
            params += [lin.weight, lin.bias]
    return params


def train(config: TrainConfig | None = None, out: str | os.PathLike | None = None,
          resume: bool = False, progress: Callable[[dict], None] | None = None,
          data: Data | None = None) -> Path:
    """Train ``config`` (default: :class:`TrainConfig()`), write the checkpoint, return its path.

    ``out`` is the checkpoint file (default ``out/train/<method>-T<T>-w<bits>-s<seed>.pt``).
    With ``resume`` an existing checkpoint at ``out`` continues where it stopped (its stored
    configuration wins); without it an existing file is overwritten only at the end of the
    first epoch. ``progress`` receives one dict per epoch.
    """
    return run_training(config, out, resume, progress, data)[1].path or Path(out)


def run_training(config: TrainConfig | None = None, out: str | os.PathLike | None = None,
                 resume: bool = False, progress: Callable[[dict], None] | None = None,
                 data: Data | None = None) -> tuple[SpikingNet, Checkpoint]:
    """:func:`train`, returning the final model and checkpoint (every rank gets its own)."""
    threads = torch.get_num_threads()
    try:
        return _run_training(config, out, resume, progress, data)
    finally:
        torch.set_num_threads(threads)


def _run_training(config, out, resume, progress, data):
    config = TrainConfig() if config is None else config
    config.validate()
    out = Path(out) if out is not None else default_checkpoint(config)
    check_out_path(out)
    distributed = init_distributed()
    rank, world = _world()

    ckpt = None
    if resume:
        ckpt = load_checkpoint(out)
        config = ckpt.config
    data = load_data(config) if data is None else data
    torch.manual_seed(config.seed)
    model = SpikingNet(config, data.n_in, data.n_out, PIXEL_BITS, data.input_shape)
    # tiny matrices: one thread is ~3x faster than two on a busy 2-core machine
    small = sum(p.numel() for p in model.parameters()) < 200_000
    torch.set_num_threads(config.threads or (1 if small else torch.get_num_threads()))
    if ckpt is not None:
        if (ckpt.n_in, ckpt.n_out) != (data.n_in, data.n_out):
            raise CheckpointError(f"checkpoint {str(out)!r} is for {ckpt.n_in} inputs and "
                                  f"{ckpt.n_out} classes, the data has {data.n_in} and "
                                  f"{data.n_out}")
        model.load_state_dict(ckpt.model_state)
        if ckpt.finished:
            return model, ckpt
    else:
        ckpt = Checkpoint(config=config, model_state={}, n_in=data.n_in, n_out=data.n_out,
                          pixel_bits=PIXEL_BITS, input_shape=model.input_shape)
        if config.init_from:
            _init_from(model, config.init_from)
    if distributed:  # every rank starts from rank 0's parameters
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, 0)

    phases = _phases(config, model.n_layers)
    train_x, train_y = data.train
    train_frames = model.encode(train_x)
    val_x, val_y = data.val
    started = time.monotonic()

    for phase_index in range(ckpt.phase, len(phases)):
        name, epochs = phases[phase_index]
        stage = int(name[3:]) if name.startswith("ptl") else None
        fresh = not (phase_index == ckpt.phase and ckpt.epoch > 0)
        if fresh and name.startswith("ptl"):
            calibrate_thresholds(model, train_x, config.percentile, layers=[stage])
        if fresh and name == "snn" and config.method != "if" and config.ann_epochs:
            calibrate_thresholds(model, train_x, config.percentile)
        if fresh and name == "qrelu":
            calibrate_thresholds(model, train_x, config.percentile)
        params = _freeze_for_stage(model, stage) if stage is not None else \
            [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        state = {"best": None, "best_score": -math.inf, "patience": 0}
        if not fresh:
            opt.load_state_dict(ckpt.state["optimizer"])
            state = {k: ckpt.state[k] for k in ("best", "best_score", "patience")}
        for epoch in range(0 if fresh else ckpt.epoch, epochs):
            for group in opt.param_groups:  # cosine schedule within the phase (resumable)
                group["lr"] = config.lr * (0.55 + 0.45 * math.cos(math.pi * epoch / max(1, epochs)))
            model.train()
            gen = torch.Generator().manual_seed(config.seed * 100003 + phase_index * 1009 + epoch)
            perm = torch.randperm(len(train_y), generator=gen)
            total = 0.0
            for start in range(0, len(perm), config.batch_size):
                batch = perm[start: start + config.batch_size]
                mine = batch[rank::world]
                opt.zero_grad(set_to_none=True)
                if len(mine):
                    loss = _loss(model, train_frames[mine], train_y[mine], name, config, stage)
                    (loss / len(batch)).backward()
                    total += loss.item()
                if distributed:
                    for p in params:
                        if p.grad is None:
                            p.grad = torch.zeros_like(p)
                    _allreduce_grads(params)
                opt.step()
            # validation: the integer network for every spiking phase, the float ANN otherwise
            if stage is not None:
                model.eval()
                logits, _ = _logits(model, model.encode(val_x), "snn", spiking_upto=stage)
                val = {"acc": float((logits.argmax(1) == val_y).float().mean()),
                       "loss": float(F.cross_entropy(logits, val_y))}
                score = -val["loss"]
            elif name == "ann":
                val = evaluate(model, val_x, val_y, "ann")
                score = val["acc"]
            else:
                val = evaluate(model, val_x, val_y, "hardware")
                score = val["acc"]
            improved = score > state["best_score"]
            if improved:
                state["best_score"] = score
                state["best"] = {k: v.clone() for k, v in model.state_dict().items()}
                state["patience"] = 0
            else:
                state["patience"] += 1
            record = {"phase": name, "epoch": epoch + 1, "epochs": epochs,
                      "train_loss": total / len(train_y), "val_acc": val["acc"],
                      "seconds": round(time.monotonic() - started, 2)}
            ckpt.history.append(record)
            stop = stage is not None and state["patience"] >= config.patience
            ckpt.phase, ckpt.epoch = phase_index, epoch + 1
            ckpt.state = {"optimizer": opt.state_dict(), **state}
            ckpt.model_state = model.state_dict()
            if rank == 0:
                save_checkpoint(ckpt, out)
                if progress is not None:
                    progress(record)
            if stop:
                break
        if state["best"] is not None:  # each phase ends on its best epoch (PTL: reload best)
            model.load_state_dict(state["best"])
        if name == "ann":  # the float ANN this run starts from, for comparison
            ckpt.metrics["test_ann_pretrained"] = evaluate(model, *data.test, "ann")["acc"]
        ckpt.phase, ckpt.epoch, ckpt.state = phase_index + 1, 0, {}

    if config.method == "ann":
        calibrate_thresholds(model, train_x, config.percentile)
    network = model.to_network()
    ckpt.model_state = model.state_dict()
    ckpt.network = network_to_dict(network)
    # real value of one integer unit per layer (for export manifests; None for pooling)
    ckpt.network["scales"] = model.scales()
    ckpt.metrics = {**ckpt.metrics, **final_metrics(model, network, data)}
    if rank == 0:  # the float ANN baseline: same arch, raw pixels, independent of T and coding
        ckpt.metrics.update(train_baseline(config, data, model.input_shape))
    ckpt.metrics["train_seconds"] = round(time.monotonic() - started, 2)
    ckpt.finished = True
    if rank == 0:
        save_checkpoint(ckpt, out)
    ckpt.path = out
    return model, ckpt


@torch.no_grad()
def final_metrics(model: SpikingNet, network: Network, data: Data) -> dict:
    """Float SNN and integer accuracies on validation and test (integer = golden), and the
    final weights run as a float ANN on the encoded input (``*_final_ann``)."""
    metrics = {}
    # the layers whose input events are spikes of hidden neurons: after the first neuron layer
    first = next(k for k, layer in enumerate(network.layers) if layer.kind != "sumpool")
    for split, (x, y) in (("val", data.val), ("test", data.test)):
        metrics[f"{split}_final_ann"] = evaluate(model, x, y, "ann")["acc"]
        metrics[f"{split}_float_snn"] = evaluate(model, x, y, "snn")["acc"]
        hw = evaluate(model, x, y, "hardware")
        prediction, synops, spiking = [], 0.0, 0.0
        for start in range(0, len(x), EVAL_CHUNK):
            trace = network.run(x[start: start + EVAL_CHUNK])
            prediction.append(trace.prediction)
            synops += float(sum(t.synops for t in trace.layers).double().sum())
            spiking += float(sum((t.synops for t in trace.layers[first + 1:]),
                                 torch.zeros(1)).double().sum())
        prediction = torch.cat(prediction)
        metrics[f"{split}_int"] = float((prediction == y).float().mean())
        metrics[f"{split}_hardware"] = hw["acc"]
        metrics[f"{split}_synops"] = synops / len(y)
        # seed 001's SynOps: operations driven by the spikes of hidden (spiking) neurons only
        metrics[f"{split}_synops_spiking"] = spiking / len(y)
    return metrics


def _baseline_epochs(config: TrainConfig) -> int:
    if config.baseline_epochs is not None:
        return config.baseline_epochs
    return config.ann_epochs or TrainConfig.ann_epochs


def train_baseline(config: TrainConfig, data: Data, input_shape=None) -> dict:
    """The float ANN baseline: the same architecture with ReLU, average pooling and float
    weights, trained on the raw pixels normalized to ``0..1`` (``pixel / pixel_max``).

    It depends only on the architecture, the data, the seed and the optimizer settings
    (``lr``, ``batch_size``, ``weight_decay``, ``baseline_epochs``), not on T, the encoder or
    the method, so it is the honest float reference of every run. It keeps the epoch with the
    best validation accuracy. Returns ``{"val_float_ann", "test_float_ann",
    "float_ann_epochs"}``, or ``{}`` when ``baseline_epochs`` is 0. Uses its own random
    state: the run's global RNG is untouched.
    """
    epochs = _baseline_epochs(config)
    if not epochs:
        return {}
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = SpikingNet(config, data.n_in, data.n_out, PIXEL_BITS, input_shape)
    scale = 1.0 / ((1 << PIXEL_BITS) - 1)
    train_x, train_y = data.train
    values = train_x.to(torch.float32) * scale
    params = list(model.linears.parameters())
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)

    @torch.no_grad()
    def accuracy(x, y):
        model.eval()
        logits = torch.cat([model.ann_values(x[i: i + EVAL_CHUNK].to(torch.float32) * scale)
                            for i in range(0, len(x), EVAL_CHUNK)])
        return float((logits.argmax(1) == y).float().mean())

    best, best_val = None, -1.0
    for epoch in range(epochs):
        for group in opt.param_groups:  # the same cosine schedule as the training phases
            group["lr"] = config.lr * (0.55 + 0.45 * math.cos(math.pi * epoch / max(1, epochs)))
        model.train()
        gen = torch.Generator().manual_seed(config.seed * 100003 + 7919 + epoch)
        perm = torch.randperm(len(train_y), generator=gen)
        for start in range(0, len(perm), config.batch_size):
            batch = perm[start: start + config.batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model.ann_values(values[batch]), train_y[batch]).backward()
            opt.step()
        val = accuracy(*data.val)
        if val > best_val:
            best_val = val
            best = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best)
    return {"val_float_ann": best_val, "test_float_ann": accuracy(*data.test),
            "float_ann_epochs": epochs}
