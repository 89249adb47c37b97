"""``spikeforge train``: train and quantize a spiking network, end in the integer model.

Examples::

    spikeforge train                                   # the default: IF, T=4, 4-bit, rate
    spikeforge train --method atif-nu -T 4 --w-bits 4 --epochs 40 --seed 1
    spikeforge train --arch conv --dataset mnist5k     # a convolutional network
    spikeforge train --arch c8k3p1-p2-c16k3p1-p2-f10 --w-bits 8,4,4
    spikeforge train --config run.toml --out out/train/run.pt
    spikeforge train --resume --out out/train/run.pt   # continue an interrupted run
    torchrun --nproc_per_node 2 -m spikeforge.cli train --method atif-u   # data parallel

Flags override the config file. The checkpoint is written atomically after every epoch. The
training itself is :func:`spikeforge.sw.train.train`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch.distributed as dist
from rich.console import Console
from rich.table import Table

from spikeforge.sw.data import DATASETS, DatasetError
from spikeforge.sw.train import (
    PRESETS,
    CheckpointError,
    ConfigError,
    QuantizationError,
    TrainConfig,
    default_checkpoint,
    load_checkpoint,
    load_config,
    train,
)
from spikeforge.sw.train.arch import GRAMMAR
from spikeforge.sw.train.config import ENCODERS, METHODS
from spikeforge.sw.train.loop import check_out_path
from spikeforge.sw.train.neurons import SURROGATES

__all__ = ["add_arguments", "run"]

_D = TrainConfig()  # the defaults the help shows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="JSON or TOML file of settings "
                        "(keys as TrainConfig; TOML may put them under [train]); flags override "
                        "it")
    parser.add_argument("--method", help=f"one of: {', '.join(METHODS)} (default {_D.method})")
    parser.add_argument("--arch", help=f"network: a preset ({', '.join(PRESETS)}) or a spec; "
                        f"{GRAMMAR}; e.g. c8k3p1-p2-c16k3p1-p2-f10 (default {_D.arch})")
    parser.add_argument("-T", "--timesteps", type=int,
                        help=f"timesteps per inference, 1..64 (default {_D.timesteps})")
    parser.add_argument("--w-bits", help="weight width in bits, 2..8, for every layer, or one "
                        f"per conv/dense layer comma separated (e.g. 8,4,4) (default {_D.w_bits})")
    parser.add_argument("--hidden", type=str,
                        help="hidden layer widths of --arch mlp, comma separated (e.g. 128 or "
                             "128,64; '' for none) (default "
                             f"{','.join(map(str, _D.hidden))})")
    parser.add_argument("--encoder", help=f"input coding: {', '.join(ENCODERS)} (default "
                        "rate, radix for --method radix; the boards run rate and radix, "
                        "direct is software only)")
    parser.add_argument("--epochs", type=int,
                        help=f"epochs of the method's own phase (default {_D.epochs})")
    parser.add_argument("--ann-epochs", type=int,
                        help=f"epochs of float ANN pre-training (default {_D.ann_epochs})")
    parser.add_argument("--baseline-epochs", type=int,
                        help="epochs of the float ANN baseline (same arch, raw pixels; 0: "
                             "none) (default: --ann-epochs, or 30 if that is 0)")
    parser.add_argument("--batch-size", type=int,
                        help=f"images per optimizer step (default {_D.batch_size})")
    parser.add_argument("--lr", type=float,
                        help=f"Adam learning rate, cosine-decayed to 55 %% within each phase "
                             f"(default {_D.lr:g})")
    parser.add_argument("--seed", type=int,
                        help=f"random seed: initialisation and batch order (default {_D.seed})")
    parser.add_argument("--surrogate", help=f"surrogate gradient: {', '.join(SURROGATES)} "
                        f"(default {_D.surrogate})")
    parser.add_argument("--synop-target", type=float,
                        help="S0 of the SynOp loss, synaptic operations per inference (qrelu "
                             "only; default none: no SynOp loss)")
    parser.add_argument("--percentile", type=float,
                        help=f"Threshold LayerNorm percentile (default {_D.percentile:g})")
    parser.add_argument("--patience", type=int,
                        help=f"PTL patience period in epochs (default {_D.patience})")
    parser.add_argument("--dataset", help=f"{', '.join(DATASETS)}, or a folder of MNIST IDX "
                        f"files (default {_D.dataset})")
    parser.add_argument("--data-root", help="folder holding the dataset's IDX files (mnist)")
    parser.add_argument("--out", type=Path,
                        help="checkpoint file (default "
                             "out/train/<method>[-<arch>]-T<T>-w<bits>-s<seed>.pt)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the unfinished run stored in --out, with its stored "
                             "settings (flags that differ from them are refused)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")


_FLAGS = {"method": "method", "timesteps": "timesteps", "encoder": "encoder", "arch": "arch",
          "epochs": "epochs", "ann_epochs": "ann_epochs", "baseline_epochs": "baseline_epochs",
          "batch_size": "batch_size", "lr": "lr", "seed": "seed", "surrogate": "surrogate",
          "synop_target": "synop_target", "percentile": "percentile", "patience": "patience",
          "dataset": "dataset", "data_root": "data_root"}


def _ints(name: str, text: str) -> list[int]:
    text = text.strip()
    try:
        return [int(v) for v in text.split(",")] if text else []
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers, not {text!r}") from None


def _changes(args: argparse.Namespace) -> dict:
    """The settings the flags give (not the config file)."""
    changes = {key: getattr(args, flag) for flag, key in _FLAGS.items()
               if getattr(args, flag, None) is not None}
    if getattr(args, "hidden", None) is not None:
        changes["hidden"] = _ints("hidden", args.hidden)
    if getattr(args, "w_bits", None) is not None:
        bits = _ints("w_bits", args.w_bits)
        changes["w_bits"] = bits[0] if len(bits) == 1 else bits
    return changes


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` the flags describe: the ``--config`` file (or the defaults)
    with every given flag applied over it."""
    base = load_config(args.config) if args.config else TrainConfig()
    changes = _changes(args)
    if "method" in changes and "hidden" not in changes and not args.config \
            and base.arch == "mlp" and changes.get("arch", "mlp") == "mlp":
        changes["hidden"] = None
    return base.replace(**changes) if changes else base


def _flag(key: str) -> str:
    return "-T" if key == "timesteps" else "--" + key.replace("_", "-")


def _normalized(key: str, value, stored: TrainConfig):
    """``value`` of setting ``key`` in the form the stored run's is compared in."""
    if key == "encoder" and value is None:
        return None  # the method's default: compared as the stored run's encoder_kind
    if key == "w_bits":
        layers = len(stored.layer_bits(1)) if isinstance(stored.w_bits, tuple) else 1
        bits = tuple(value) if isinstance(value, (list, tuple)) else (value,) * layers
        return bits if len(bits) > 1 or layers > 1 else bits[0]
    if key == "hidden" and value is not None:
        return list(value)
    return value


def _resume_conflicts(args: argparse.Namespace, stored: TrainConfig) -> list[str]:
    """``--flag value (stored: ...)`` for every flag (or --config setting) whose value differs
    from the stored run's."""
    have = stored.to_dict()
    have["encoder"] = stored.encoder_kind
    have["w_bits"] = _normalized("w_bits", stored.w_bits, stored)
    asked = []
    if args.config:
        wanted = load_config(args.config)
        data = wanted.to_dict()
        data["encoder"] = wanted.encoder_kind
        asked += [(key, value, " in --config") for key, value in data.items()]
    asked += [(key, value, "") for key, value in _changes(args).items()]
    conflicts = []
    for key, value, where in asked:
        value = _normalized(key, value, stored)
        if value is None and key == "encoder":
            continue
        if value != have.get(key):
            shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
            old = have.get(key)
            old = ",".join(map(str, old)) if isinstance(old, (list, tuple)) else old
            conflicts.append(f"{_flag(key)} {shown}{where} (stored: {old})")
    return conflicts


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    rank = int(os.environ.get("RANK", "0"))  # under torchrun only rank 0 reports
    if rank:
        args.quiet = True
    try:
        if args.resume:  # --out, or the default path of the run the flags describe
            out = args.out if args.out is not None else \
                default_checkpoint(_config_from_args(args))
            check_out_path(out)
            config = load_checkpoint(out).config
            conflicts = _resume_conflicts(args, config)
            if conflicts:
                raise ConfigError(f"--resume continues {str(out)!r} with its stored "
                                  f"settings, but {'; '.join(conflicts)}: drop "
                                  f"{'it' if len(conflicts) == 1 else 'them'} or train anew "
                                  "without --resume")
        else:
            config = _config_from_args(args)
            out = args.out if args.out is not None else default_checkpoint(config)
            check_out_path(out)

        def progress(record: dict) -> None:
            if not args.quiet:
                console.print(f"{record['phase']:>5}: epoch {record['epoch']:>3}/{record['epochs']}"
                              f"  loss {record['train_loss']:.4f}  val acc {record['val_acc']:.2%}"
                              f"  ({record['seconds']:.1f} s)")

        if not args.quiet:
            arch = config.arch + (f" {list(config.hidden)}" if config.arch == "mlp" else "")
            console.print(f"training {config.method}, arch {arch}, T = {config.timesteps}, "
                          f"{config.w_bits_text}-bit weights, {config.encoder_kind} encoder, "
                          f"{config.dataset}, seed {config.seed} -> {out}")
        path = train(config, out=out, resume=args.resume, progress=progress)
    except (ConfigError, CheckpointError, DatasetError, QuantizationError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        return 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    if rank:
        return 0
    ckpt = load_checkpoint(path)
    m = ckpt.metrics
    table = Table(title=f"spikeforge train: {config.method}, {ckpt.arch}, T = "
                        f"{config.timesteps}, {config.w_bits_text}-bit weights, "
                        f"{config.encoder_kind} encoder")
    table.add_column("quantity", no_wrap=True)
    table.add_column("value", justify="right", overflow="fold")
    for key, label in (("test_float_ann", "test accuracy, float ANN baseline (same arch, "
                                          "raw pixels)"),
                       ("test_float_snn", "test accuracy, float SNN"),
                       ("test_int", "test accuracy, integer golden model"),
                       ("test_synops", "synaptic operations / inference"),
                       ("train_seconds", "training time (s)")):
        if key in m:
            value = m[key]
            table.add_row(label, f"{value:.2%}" if "acc" in label else f"{value:.1f}")
    table.add_row("checkpoint", str(path))
    Console(width=max(120, Console().width)).print(table)
    return 0
