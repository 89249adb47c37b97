"""Training configuration: one dataclass, loadable from JSON/TOML files and command-line flags."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["METHODS", "ENCODERS", "TrainConfig", "ConfigError", "load_config"]

#: Training methods. ``ann`` is the float ANN baseline (converted by Threshold LayerNorm only).
METHODS = ("ann", "if", "atif-u", "atif-nu", "radix", "qrelu", "ptl")
#: Input codings. The boards implement ``rate`` and ``radix``; ``direct`` (analog) is
#: software only.
ENCODERS = ("rate", "radix", "direct")
#: The default hidden widths of the ``mlp`` preset.
DEFAULT_HIDDEN = (128,)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


@dataclass
class TrainConfig:
    """Everything that determines a training run (with the seed, it determines the result).

    The defaults are ``make demo``'s network: the IF neuron with soft reset and a fixed
    threshold, direct-trained (surrogate gradients, seed 000's baseline) from a float ANN, at
    T = 4 with 4-bit weights, rate input coding (what the boards implement), a 64-128-10
    network (``arch = "mlp"``) read out by the last layer's membrane (docs/training.md).

    ``arch`` is a preset (``mlp``, ``conv``, ``seed001``) or a spec such as
    ``c8k3p1-p2-c16k3p1-p2-f10`` (:mod:`spikeforge.sw.train.arch`). ``hidden`` gives the
    hidden widths of the ``mlp`` preset only. ``w_bits`` is one width for every layer or one
    per conv/dense layer.
    """

    method: str = "if"
    timesteps: int = 4
    w_bits: int | tuple[int, ...] = 4
    hidden: tuple[int, ...] | None = None  # arch "mlp" only; None: (128,)
    encoder: str | None = None  # None: the method's default (radix for radix, rate otherwise)
    arch: str = "mlp"
    dataset: str = "digits"
    data_root: str | None = None
    epochs: int = 40
    ann_epochs: int = 30  # float ANN pre-training (ann, ptl, qrelu, radix; init of the others)
    batch_size: int = 64
    lr: float = 5e-3
    weight_decay: float = 0.0
    seed: int = 0
    surrogate: str = "sigmoid"
    alpha: float = 4.0
    v_init_half: bool = True
    theta_init: float = 1.0
    percentile: float = 99.9  # Threshold LayerNorm (ptl, ann)
    patience: int = 3  # PTL's adaptive scheduler
    synop_target: float | None = None  # S0, synaptic operations per inference (qrelu)
    synop_weight: float = 1.0  # alpha of the SynOp loss, applied to ((S - S0) / S0)**2
    v_bits_max: int = 32
    init_from: str | None = None  # start from this checkpoint's float weights, skip ann phase
    threads: int | None = None  # torch threads while training; None: 1 for small networks
    #: epochs of the float ANN baseline (same arch, raw pixels); None: ann_epochs (30 if 0),
    #: 0: no baseline
    baseline_epochs: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.arch, str):
            self.arch = self.arch.strip()
        if self.hidden is None and self.arch == "mlp":
            self.hidden = DEFAULT_HIDDEN
        if self.hidden is not None:
            try:
                self.hidden = tuple(int(h) for h in self.hidden)
            except (TypeError, ValueError):
                raise ConfigError(f"hidden must be a list of layer widths, not "
                                  f"{self.hidden!r}") from None
        if isinstance(self.w_bits, (list, tuple)):
            self.w_bits = tuple(self.w_bits)
        self.validate()

    @property
    def encoder_kind(self) -> str:
        if self.encoder is not None:
            return self.encoder
        return "radix" if self.method == "radix" else "rate"

    @property
    def spec(self) -> str:
        """The architecture as a spec, its output written ``f{classes}`` (for a preset)."""
        from .arch import arch_spec
        return arch_spec(self.arch, self.hidden)

    def layer_bits(self, n_layers: int) -> tuple[int, ...]:
        """``w_bits`` of each of the ``n_layers`` conv/dense layers."""
        if isinstance(self.w_bits, tuple):
            return self.w_bits
        return (self.w_bits,) * n_layers

    @property
    def w_bits_text(self) -> str:
        """``4`` or ``8,4,4``: the weight widths as the command line writes them."""
        bits = self.w_bits
        return ",".join(map(str, bits)) if isinstance(bits, tuple) else str(bits)

    def validate(self) -> None:
        def bad(name, message):
            raise ConfigError(f"{name} {message}")

        if self.method not in METHODS:
            bad("method", f"must be one of {', '.join(METHODS)}, not {self.method!r}")
        widths = self.w_bits if isinstance(self.w_bits, tuple) else (self.w_bits,)
        if not widths or any(isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 8
                             for b in widths):
            bad("w_bits", f"must be an integer from 2 to 8 (the hardware's weight widths), "
                          f"or one per layer, not {self.w_bits!r}")
        if isinstance(self.timesteps, bool) or not isinstance(self.timesteps, int) \
                or not 1 <= self.timesteps <= 64:
            bad("timesteps", f"must be an integer from 1 to 64, not {self.timesteps!r}")
        if self.encoder is not None and self.encoder not in ENCODERS:
            bad("encoder", f"must be one of {', '.join(ENCODERS)}, not {self.encoder!r}")
        if self.method == "radix" and self.encoder_kind != "radix":
            bad("encoder", "must be 'radix' for method 'radix'")
        if self.method != "radix" and self.encoder_kind == "radix":
            bad("encoder", f"'radix' needs method 'radix', not {self.method!r}")
        from .arch import PRESETS, arch_spec, neuron_layers
        if not isinstance(self.arch, str):
            bad("arch", f"must be a preset ({', '.join(PRESETS)}) or a spec string, "
                        f"not {self.arch!r}")
        if self.arch == "mlp":
            if any(h < 1 for h in self.hidden):
                bad("hidden", f"layer widths must be >= 1, got {self.hidden}")
        elif self.hidden is not None:
            bad("hidden", f"sets the hidden widths of arch 'mlp' only, not of {self.arch!r}: "
                          "write them into the arch spec (e.g. f128-f10)")
        layers = neuron_layers(arch_spec(self.arch, self.hidden, 1))  # names a bad token
        if self.method != "radix" and layers < 2:
            if self.arch == "mlp":
                bad("hidden", f"method {self.method!r} needs at least one hidden layer")
            bad("arch", f"{self.arch!r} has only its output layer, but method "
                        f"{self.method!r} needs at least one hidden layer")
        if isinstance(self.w_bits, tuple) and len(self.w_bits) != layers:
            bad("w_bits", f"gives {len(self.w_bits)} widths but arch {self.arch!r} has "
                          f"{layers} conv/dense layers (give one width, or one per layer)")
        for name in ("epochs", "ann_epochs", "patience"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                bad(name, f"must be a non-negative integer, not {getattr(self, name)!r}")
        if self.baseline_epochs is not None and (
                not isinstance(self.baseline_epochs, int) or self.baseline_epochs < 0):
            bad("baseline_epochs", f"must be a non-negative integer or None, not "
                                   f"{self.baseline_epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            bad("batch_size", f"must be a positive integer, not {self.batch_size!r}")
        if not self.lr > 0:
            bad("lr", f"must be > 0, not {self.lr!r}")
        if not 50 <= self.percentile <= 100:
            bad("percentile", f"must lie in 50..100, not {self.percentile!r}")
        if self.synop_target is not None and not self.synop_target > 0:
            bad("synop_target", f"must be > 0, not {self.synop_target!r}")
        if self.synop_target is not None and self.method != "qrelu":
            bad("synop_target", f"is the SynOp loss of method 'qrelu', not {self.method!r}")
        if not 2 <= self.v_bits_max <= 32:
            bad("v_bits_max", f"must lie in 2..32, not {self.v_bits_max!r}")
        from .neurons import SURROGATES
        if self.surrogate not in SURROGATES:
            bad("surrogate", f"must be one of {', '.join(SURROGATES)}, not {self.surrogate!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = None if self.hidden is None else list(self.hidden)
        if isinstance(self.w_bits, tuple):
            d["w_bits"] = list(self.w_bits)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown configuration key(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes) -> TrainConfig:
        """A copy with ``changes``. A new ``arch`` other than ``mlp`` drops ``hidden`` (the
        widths of ``mlp``) unless ``changes`` sets it too."""
        data = {**self.to_dict(), **changes}
        if "arch" in changes and "hidden" not in changes and str(changes["arch"]).strip() \
                != "mlp":
            data["hidden"] = None
        return self.from_dict(data)


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a JSON (``.json``) or TOML (``.toml``) configuration file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    try:
        if path.suffix == ".toml":
            import tomllib
            data = tomllib.loads(text)
            data = data.get("train", data)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a table of settings")
    return TrainConfig.from_dict(data)
