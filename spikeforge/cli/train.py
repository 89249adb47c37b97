"""``spikeforge train``: train and quantize a spiking network, end in the integer model.

Examples::

    spikeforge train                                   # the default: IF, T=4, 4-bit weights
    spikeforge train --method atif-nu -T 4 --w-bits 4 --epochs 40 --seed 1
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

from spikeforge.sw.data import DatasetError
from spikeforge.sw.train import (
    CheckpointError,
    ConfigError,
    QuantizationError,
    TrainConfig,
    default_checkpoint,
    load_checkpoint,
    load_config,
    train,
)
from spikeforge.sw.train.config import ENCODERS, METHODS
from spikeforge.sw.train.neurons import SURROGATES

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="JSON or TOML file of settings "
                        "(keys as TrainConfig; TOML may put them under [train])")
    parser.add_argument("--method", help=f"one of: {', '.join(METHODS)} (default if)")
    parser.add_argument("-T", "--timesteps", type=int, help="timesteps per inference")
    parser.add_argument("--w-bits", type=int, help="weight width in bits, 2..8")
    parser.add_argument("--hidden", type=str,
                        help="hidden layer widths, comma separated (e.g. 128 or 128,64; "
                             "'' for none)")
    parser.add_argument("--encoder", help=f"input coding: {', '.join(ENCODERS)}")
    parser.add_argument("--epochs", type=int, help="epochs of the method's own phase")
    parser.add_argument("--ann-epochs", type=int, help="epochs of float ANN pre-training")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--surrogate", help=f"one of: {', '.join(SURROGATES)}")
    parser.add_argument("--synop-target", type=float,
                        help="S0 of the SynOp loss, synaptic operations per inference (qrelu)")
    parser.add_argument("--percentile", type=float, help="Threshold LayerNorm percentile")
    parser.add_argument("--patience", type=int, help="PTL patience period (epochs)")
    parser.add_argument("--dataset", help="digits (embedded) or mnist")
    parser.add_argument("--data-root", help="folder holding the dataset's IDX files")
    parser.add_argument("--out", type=Path,
                        help="checkpoint file (default out/train/<method>-T<T>-w<bits>-s<seed>.pt)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the unfinished run stored in --out")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")


_FLAGS = {"method": "method", "timesteps": "timesteps", "w_bits": "w_bits", "encoder": "encoder",
          "epochs": "epochs", "ann_epochs": "ann_epochs", "batch_size": "batch_size",
          "lr": "lr", "seed": "seed", "surrogate": "surrogate", "synop_target": "synop_target",
          "percentile": "percentile", "patience": "patience", "dataset": "dataset",
          "data_root": "data_root"}


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` the flags describe: the ``--config`` file (or the defaults)
    with every given flag applied over it."""
    base = load_config(args.config) if args.config else TrainConfig()
    changes = {key: getattr(args, flag) for flag, key in _FLAGS.items()
               if getattr(args, flag, None) is not None}
    if getattr(args, "hidden", None) is not None:
        text = args.hidden.strip()
        try:
            changes["hidden"] = [int(h) for h in text.split(",")] if text else []
        except ValueError:
            raise ConfigError(f"hidden must be comma-separated integers, not {args.hidden!r}") \
                from None
    if "method" in changes and "hidden" not in changes and not args.config:
        changes["hidden"] = None
    return base.replace(**changes) if changes else base


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    rank = int(os.environ.get("RANK", "0"))  # under torchrun only rank 0 reports
    if rank:
        args.quiet = True
    try:
        config = _config_from_args(args)
        out = args.out if args.out is not None else default_checkpoint(config)
        if args.resume:
            config = load_checkpoint(out).config

        def progress(record: dict) -> None:
            if not args.quiet:
                console.print(f"{record['phase']:>5}: epoch {record['epoch']:>3}/{record['epochs']}"
                              f"  loss {record['train_loss']:.4f}  val acc {record['val_acc']:.2%}"
                              f"  ({record['seconds']:.1f} s)")

        if not args.quiet:
            console.print(f"training {config.method}, T = {config.timesteps}, "
                          f"{config.w_bits}-bit weights, hidden {list(config.hidden)}, "
                          f"seed {config.seed} -> {out}")
        path = train(config, out=out, resume=args.resume, progress=progress)
    except (ConfigError, CheckpointError, DatasetError, QuantizationError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    if rank:
        return 0
    ckpt = load_checkpoint(path)
    m = ckpt.metrics
    table = Table(title=f"spikeforge train: {config.method}, T = {config.timesteps}, "
                        f"{config.w_bits}-bit weights")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key, label in (("test_ann_pretrained", "test accuracy, float ANN (pre-training)"),
                       ("test_float_ann", "test accuracy, final weights as float ANN"),
                       ("test_float_snn", "test accuracy, float SNN"),
                       ("test_int", "test accuracy, integer golden model"),
                       ("test_synops", "synaptic operations / inference"),
                       ("train_seconds", "training time (s)")):
        if key in m:
            value = m[key]
            table.add_row(label, f"{value:.2%}" if "acc" in label else f"{value:.1f}")
    table.add_row("checkpoint", str(path))
    Console().print(table)
    return 0

