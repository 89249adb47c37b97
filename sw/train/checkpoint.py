"""Checkpoints: written atomically, loaded with validation, convertible to the golden model."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..golden import ConvLayer, DenseLayer, Encoder, Network, SumPoolLayer
from .config import ConfigError, TrainConfig

__all__ = ["Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint",
           "integer_network", "FORMAT", "VERSION"]

FORMAT = "spikeforge-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, of an unknown version, or unfinished."""


@dataclass
class Checkpoint:
    """A training run's state. ``network`` holds the integer network once training finished."""

    config: TrainConfig
    model_state: dict
    n_in: int
    n_out: int
    pixel_bits: int
    phase: int = 0  # index into the run's phase list
    epoch: int = 0  # epochs done in that phase
    state: dict = field(default_factory=dict)  # optimizer, best model, patience, ...
    history: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    network: dict | None = None
    finished: bool = False
    path: Path | None = None
    input_shape: tuple[int, int, int] | None = None  # None (older runs): a square image

    def model(self):
        """The :class:`~spikeforge.sw.train.model.SpikingNet` with this checkpoint's
        parameters."""
        from .model import SpikingNet
        model = SpikingNet(self.config, self.n_in, self.n_out, self.pixel_bits,
                           self.input_shape)
        model.load_state_dict(self.model_state)
        return model

    @property
    def arch(self) -> str:
        """The architecture as a spec (``c8k3p1-p2-c16k3p1-p2-f10``, ``f128-f10``)."""
        from .arch import arch_spec
        return arch_spec(self.config.arch, self.config.hidden, self.n_out)

    @property
    def scales(self) -> list[float | None]:
        """Per layer, the real (float-model) value of one integer unit of weight and membrane:
        the ``scales`` argument of :func:`spikeforge.sw.export.export_network`."""
        if self.network is None:
            return []
        return list(self.network.get("scales") or [None] * len(self.network["layers"]))

    @property
    def metadata(self) -> dict:
        """JSON-able summary of the run (config and test metrics), for export manifests."""
        return {"training": {"config": self.config.to_dict(), "arch": self.arch,
                             "metrics": dict(self.metrics)}}

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "config": self.config.to_dict(),
                "model_state": self.model_state, "n_in": self.n_in, "n_out": self.n_out,
                "pixel_bits": self.pixel_bits, "phase": self.phase, "epoch": self.epoch,
                "state": self.state, "history": self.history, "metrics": self.metrics,
                "network": self.network, "finished": self.finished,
                "input_shape": None if self.input_shape is None else list(self.input_shape)}


def _layer_to_dict(layer) -> dict:
    if isinstance(layer, SumPoolLayer):
        return {"kind": "sumpool", "kernel": list(layer.kernel), "stride": list(layer.stride),
                "padding": list(layer.padding), "input_shape": list(layer.input_shape),
                "name": layer.name}
    spec = {"kind": layer.kind, "weight": layer.weight.clone(), "bias": layer.bias.clone(),
            "theta": layer.theta.clone(), "leak_shift": layer.leak_shift,
            "fire_mode": layer.fire_mode.value, "v_init": layer.v_init, "fires": layer.fires,
            "w_bits": layer.w_bits, "v_bits": layer.v_bits, "name": layer.name}
    if isinstance(layer, ConvLayer):
        spec.update(input_shape=list(layer.input_shape), stride=list(layer.stride),
                    padding=list(layer.padding))
    return spec


def network_to_dict(network: Network) -> dict:
    return {"timesteps": network.timesteps,
            "encoder": {"kind": network.encoder.kind.value,
                        "pixel_bits": network.encoder.pixel_bits},
            "layers": [_layer_to_dict(layer) for layer in network.layers]}


_KINDS = {"dense": DenseLayer, "conv": ConvLayer, "sumpool": SumPoolLayer}


def _layer_from_dict(spec: dict):
    spec = dict(spec)
    kind = spec.pop("kind", "dense")  # checkpoints before convolutions: dense layers only
    if kind not in _KINDS:
        raise ValueError(f"unknown layer kind {kind!r}")
    for key in ("input_shape", "stride", "padding", "kernel"):
        if isinstance(spec.get(key), list):
            spec[key] = tuple(spec[key])
    return _KINDS[kind](**spec)


def network_from_dict(data: dict) -> Network:
    layers = [_layer_from_dict(spec) for spec in data["layers"]]
    return Network(layers, data["timesteps"], Encoder(**data["encoder"]))


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    """Write ``checkpoint`` to ``path`` atomically: a temporary file in the same folder, then a
    rename. A failure leaves the previous file (if any) untouched and no partial file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint.to_dict(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    checkpoint.path = path
    return path


def _upgrade_config(config: dict) -> dict:
    """A stored configuration in today's terms. Runs from before architectures (no ``arch``
    key) are fully connected (``arch = "mlp"``, the default) and coded their input with the
    ``direct`` encoder when ``encoder`` was left unset (the default then; it is ``rate`` now)."""
    config = dict(config)
    if "arch" not in config and config.get("encoder") is None \
            and config.get("method") != "radix":
        config["encoder"] = "direct"
    return config


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`, or raise :class:`CheckpointError`
    naming the file and the problem (missing, corrupt, not a spikeforge checkpoint, version)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged zip/pickle data
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not a spikeforge "
                              f"checkpoint (torch.load: {type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a spikeforge checkpoint")
    if data.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} has version {data.get('version')!r}; "
                              f"this spikeforge reads version {VERSION}")
    try:
        config = TrainConfig.from_dict(_upgrade_config(data["config"]))
        shape = data.get("input_shape")
        ckpt = Checkpoint(config=config, model_state=data["model_state"], n_in=data["n_in"],
                          n_out=data["n_out"], pixel_bits=data["pixel_bits"],
                          phase=data["phase"], epoch=data["epoch"], state=data["state"],
                          history=data["history"], metrics=data["metrics"],
                          network=data["network"], finished=data["finished"], path=path,
                          input_shape=None if shape is None else tuple(shape))
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is incomplete or inconsistent: "
                              f"{exc}") from None
    return ckpt


def integer_network(checkpoint_or_path) -> Network:
    """The golden :class:`~spikeforge.sw.golden.Network` (encoder included) of a finished
    checkpoint."""
    ckpt = checkpoint_or_path if isinstance(checkpoint_or_path, Checkpoint) \
        else load_checkpoint(checkpoint_or_path)
    where = str(ckpt.path) if ckpt.path is not None else "checkpoint"
    if not ckpt.finished or ckpt.network is None:
        raise CheckpointError(f"{where!r} is an unfinished training run (phase {ckpt.phase}, "
                              f"epoch {ckpt.epoch}); resume it with `spikeforge train --resume`")
    try:
        return network_from_dict(ckpt.network)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where!r} holds an invalid integer network: {exc}") from None
