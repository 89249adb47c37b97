"""Convolutional spiking networks in software: accuracy grid, weight width, SynOp loss.

    python -m bench conv                                   # all three parts, full grid (hours)
    python -m bench conv --grid --datasets digits --archs conv mlp --methods if atif-u qrelu \\
        --timesteps 4 --seeds 0
    python -m bench conv --wbits --dataset mnist5k         # seed 003's Table II, conv preset
    python -m bench conv --synop --dataset digits          # seed 001's SynOp loss, conv preset
    python -m bench conv --grid --cached-only              # tables from the cache, train nothing

(``python -m bench.bench_conv ...`` is the same.)

Parts (none named: all three):

``--grid``     dataset {digits, mnist5k} x arch {mlp, conv, seed001} x method {if, atif-u,
               atif-nu, qrelu, ptl, radix} x T {1, 2, 4}, 4-bit weights, seeds {0, 1, 2}.
``--wbits``    weight width 2..8 for one (dataset, arch, method, T): only ``w_bits`` changes.
``--synop``    method qrelu with the SynOp loss (``synop_target`` = S0, ``synop_weight``) on the
               conv preset: S0 is a fraction of the plain QReLU run's hidden-spike SynOps.

Every run is the trainer's own (``spikeforge.sw.train.run_training``) with its defaults (rate
input coding, 30 float-ANN epochs then ``--epochs`` epochs of the method's phase; radix, which
trains from scratch, gets ``--epochs`` + ``--ann-epochs``), one torch thread. The SNN figure is
the *integer golden model*'s test accuracy (``test_int``); the float ANN beside it is the
trainer's baseline (``test_float_ann``: same architecture, float weights, ReLU, average pooling,
raw pixels; independent of method, T, encoder and w_bits), trained once per (dataset, arch, seed)
and cached, the runs themselves set ``baseline_epochs = 0``.

Each run's result is one JSON file under ``out/bench/conv/runs/``, named by its configuration,
so a rerun trains only what is missing. The tables are printed (mean ± std over seeds) and
written to ``out/bench/conv_{grid,wbits,synop}.json`` and ``.png``.

Targets (printed, not asserted): on mnist5k's 1,000 test images the conv SNN at T <= 4 with
4-bit weights reaches >= 97.5 % and stays within 0.5 points of its float ANN; on digits >= 98 %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

OUT = Path("out/bench")
FOLDER = OUT / "conv"
DATASETS = ("digits", "mnist5k")
ARCHS = ("mlp", "conv", "seed001")
METHODS = ("if", "atif-u", "atif-nu", "qrelu", "ptl", "radix")
TIMESTEPS = (1, 2, 4)
BITS = (2, 3, 4, 5, 6, 7, 8)
FRACTIONS = (0.5, 0.3, 0.2, 0.1)
#: (dataset -> (minimum accuracy, max points below the float ANN or None))
TARGETS = {"mnist5k": (0.975, 0.5), "digits": (0.98, None)}


def _fmt_key(value) -> str:
    return str(value).replace(".", "p").replace(",", "-")


class Cache:
    """One JSON per run under ``folder/runs``; trains what is missing (unless ``cached_only``)."""

    def __init__(self, folder: Path, epochs: int, ann_epochs: int, cached_only: bool, console):
        self.runs = folder / "runs"
        self.runs.mkdir(parents=True, exist_ok=True)
        self.epochs, self.ann_epochs = epochs, ann_epochs
        self.cached_only = cached_only
        self.console = console
        self._data = {}
        self.trained_seconds = 0.0

    def data(self, dataset):
        if dataset not in self._data:
            from spikeforge.sw.train import TrainConfig, load_data
            self._data[dataset] = load_data(TrainConfig(dataset=dataset))
        return self._data[dataset]

    def _load(self, path: Path):
        return json.loads(path.read_text()) if path.exists() else None

    def _store(self, path: Path, record: dict) -> dict:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
        tmp.replace(path)
        return record

    def baseline(self, dataset: str, arch: str, seed: int) -> dict | None:
        """The float ANN baseline of (dataset, arch, seed): ``test_float_ann``."""
        path = self.runs / f"ann_{dataset}_{arch}_s{seed}_b{self.ann_epochs}.json"
        record = self._load(path)
        if record is not None or self.cached_only:
            return record
        import torch

        from spikeforge.sw.train import TrainConfig, train_baseline
        torch.set_num_threads(1)
        config = TrainConfig(dataset=dataset, arch=arch, seed=seed, threads=1,
                             baseline_epochs=self.ann_epochs)
        start = time.monotonic()
        metrics = train_baseline(config, self.data(dataset))
        seconds = round(time.monotonic() - start, 1)
        self.trained_seconds += seconds
        self.console.print(f"float ANN {dataset} {arch} s{seed}: "
                           f"{metrics['test_float_ann']:.2%} ({seconds:.0f} s)")
        return self._store(path, {**metrics, "seconds": seconds, "dataset": dataset,
                                  "arch": arch, "seed": seed})

    def run(self, dataset: str, arch: str, method: str, T: int, bits: int, seed: int,
            synop_target: float | None = None, synop_weight: float = 1.0) -> dict | None:
        epochs = self.epochs + (self.ann_epochs if method == "radix" else 0)
        name = f"{dataset}_{arch}_{method}_T{T}_w{bits}_s{seed}_e{epochs}_a{self.ann_epochs}"
        if synop_target is not None:
            name += f"_S{_fmt_key(synop_target)}_sw{_fmt_key(synop_weight)}"
        path = self.runs / f"{name}.json"
        record = self._load(path)
        if record is not None or self.cached_only:
            return record
        import torch

        from spikeforge.sw.train import TrainConfig
        from spikeforge.sw.train.loop import run_training
        torch.set_num_threads(1)
        extra = {} if synop_target is None else {"synop_target": synop_target,
                                                 "synop_weight": synop_weight}
        config = TrainConfig(dataset=dataset, arch=arch, method=method, timesteps=T,
                             w_bits=bits, seed=seed, epochs=epochs, ann_epochs=self.ann_epochs,
                             baseline_epochs=0, threads=1, **extra)
        ckpt_path = self.runs / f"{name}.pt"
        start = time.monotonic()
        _, ckpt = run_training(config, out=ckpt_path, data=self.data(dataset))
        seconds = round(time.monotonic() - start, 1)
        self.trained_seconds += seconds
        m = ckpt.metrics
        memory = _memory(ckpt)
        record = {"config": config.to_dict(), "acc": m["test_int"],
                  "float_snn": m.get("test_float_snn"), "val_int": m.get("val_int"),
                  "ann_pretrained": m.get("test_ann_pretrained"),
                  "synops": m["test_synops"], "synops_spiking": m["test_synops_spiking"],
                  "best_epoch": _best_epoch(ckpt.history), "seconds": seconds,
                  "memory": memory}
        ckpt_path.unlink(missing_ok=True)  # keep the cache small: the JSON holds the numbers
        self.console.print(f"{name}: integer {m['test_int']:.2%}, {m['test_synops']:.0f} synops "
                           f"({m['test_synops_spiking']:.0f} hidden), {seconds:.0f} s")
        return self._store(path, record)


def _memory(ckpt) -> dict:
    """Bits of the converted network (``arch.memory_report``): weights, biases, membranes."""
    from spikeforge.sw.train import integer_network
    from spikeforge.sw.train.arch import memory_report
    rows = memory_report(integer_network(ckpt))
    return {"weight_bits": sum(r["weight_bits"] for r in rows),
            "bias_bits": sum(r["bias_bits"] for r in rows),
            "membrane_bits": sum(r["membrane_bits"] for r in rows),
            "v_bits": [r["v_bits"] for r in rows if r["kind"] != "sumpool"]}


def _best_epoch(history) -> dict:
    """Epoch (1-based) of the best validation accuracy in the last phase, and its length."""
    if not history:
        return {}
    last = history[-1]["phase"]
    phase = [r for r in history if r["phase"] == last]
    best = max(phase, key=lambda r: r["val_acc"])
    return {"phase": last, "epoch": best["epoch"], "of": len(phase)}


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std, len(values)


def _pct(values) -> str:
    mean, std, n = _stats(values)
    if mean is None:
        return "—"
    return f"{mean:.2%}" if n == 1 else f"{mean * 100:.2f} ± {std * 100:.2f}"


def _field(runs, field):
    return [None if r is None else r[field] for r in runs]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _write_json(name: str, payload: dict, console) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(payload, indent=1, sort_keys=True))
    console.print(f"numbers: {OUT / (name + '.json')}")


def _target_line(dataset: str, snn: float | None, ann: float | None, what: str) -> str:
    minimum, gap = TARGETS.get(dataset, (None, None))
    if snn is None or minimum is None:
        return f"{dataset}: {what}: not measured"
    text = (f"{dataset}: {what} {snn:.2%}: target >= {minimum:.1%} "
            f"{'MET' if snn >= minimum else f'MISSED by {(minimum - snn) * 100:.2f} points'}")
    if ann is not None:
        text += f"; float ANN {ann:.2%} ({(snn - ann) * 100:+.2f} points)"
        if gap is not None:
            ok = snn >= ann - gap / 100
            text += f", within {gap} points: {'MET' if ok else 'MISSED'}"
    return text


# --- (a) the grid ---------------------------------------------------------------------------

def grid(cache: Cache, args, console) -> dict:
    from rich.table import Table

    results, anns = {}, {}
    for dataset in args.datasets:
        for arch in args.archs:
            anns[dataset, arch] = [cache.baseline(dataset, arch, s) for s in args.seeds]
            for method in args.methods:
                for T in args.timesteps:
                    results[dataset, arch, method, T] = [
                        cache.run(dataset, arch, method, T, 4, s) for s in args.seeds]

    payload = {"seeds": args.seeds, "w_bits": 4, "rows": []}
    for dataset in args.datasets:
        table = Table(title=f"{dataset}: integer golden-model test accuracy, 4-bit weights, "
                            f"seeds {args.seeds} (mean ± std; — not run)")
        for col in ("arch", "float ANN", "method", *[f"T={T}" for T in args.timesteps],
                    f"synops @T={max(args.timesteps)} (all / hidden)", "s / run"):
            table.add_column(col, justify="left" if col in ("arch", "method") else "right")
        for arch in args.archs:
            ann_runs = anns[dataset, arch]
            ann_text = _pct(_field(ann_runs, "test_float_ann"))
            for k, method in enumerate(args.methods):
                cells = [_pct(_field(results[dataset, arch, method, T], "acc"))
                         for T in args.timesteps]
                last = results[dataset, arch, method, max(args.timesteps)]
                syn, _, _ = _stats(_field(last, "synops"))
                hid, _, _ = _stats(_field(last, "synops_spiking"))
                sec, _, _ = _stats([r["seconds"] for T in args.timesteps
                                    for r in results[dataset, arch, method, T] if r])
                table.add_row(arch if k == 0 else "", ann_text if k == 0 else "", method,
                              *cells, "—" if syn is None else f"{syn:,.0f} / {hid:,.0f}",
                              "—" if sec is None else f"{sec:.0f}")
                for T in args.timesteps:
                    runs = results[dataset, arch, method, T]
                    payload["rows"].append({
                        "dataset": dataset, "arch": arch, "method": method, "T": T,
                        "acc": _field(runs, "acc"), "synops": _field(runs, "synops"),
                        "synops_spiking": _field(runs, "synops_spiking"),
                        "seconds": _field(runs, "seconds"),
                        "float_ann": _field(ann_runs, "test_float_ann")})
            table.add_section()
        console.print(table)
        if "conv" in args.archs:
            best = None
            for method in args.methods:
                for T in args.timesteps:
                    mean, _, _ = _stats(_field(results[dataset, "conv", method, T], "acc"))
                    if mean is not None and (best is None or mean > best[0]):
                        best = (mean, method, T)
            ann, _, _ = _stats(_field(anns[dataset, "conv"], "test_float_ann"))
            what = "best conv SNN at T <= 4" if best is None else \
                f"best conv SNN at T <= 4 ({best[1]}, T = {best[2]})"
            console.print(_target_line(dataset, best and best[0], ann, what))
    _write_json("conv_grid", payload, console)

    plt = _plt()
    fig, axes = plt.subplots(len(args.datasets), len(args.archs), squeeze=False,
                             figsize=(4.5 * len(args.archs), 3.6 * len(args.datasets)))
    for i, dataset in enumerate(args.datasets):
        for j, arch in enumerate(args.archs):
            ax = axes[i][j]
            for method in args.methods:
                xs, ys, es = [], [], []
                for T in args.timesteps:
                    mean, std, _ = _stats(_field(results[dataset, arch, method, T], "acc"))
                    if mean is not None:
                        xs.append(T), ys.append(mean * 100), es.append(std * 100)
                if xs:
                    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
            ann, _, _ = _stats(_field(anns[dataset, arch], "test_float_ann"))
            if ann is not None:
                ax.axhline(ann * 100, ls="--", color="black", label="float ANN")
            minimum = TARGETS.get(dataset, (None,))[0]
            if arch == "conv" and minimum:
                ax.axhline(minimum * 100, ls=":", color="red", label="target")
            ax.set(title=f"{dataset}, {arch}", xlabel="timesteps T",
                   ylabel="integer SNN test accuracy (%)")
            ax.set_xticks(list(args.timesteps))
            if ax.has_data():
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "conv_grid.png", dpi=110)
    plt.close(fig)
    console.print(f"figure: {OUT / 'conv_grid.png'}")
    return payload


# --- (b) weight width ----------------------------------------------------------------------

def wbits(cache: Cache, args, console) -> dict:
    from rich.table import Table

    d, arch, method, T = args.dataset, args.arch, args.method, args.T
    ann_runs = [cache.baseline(d, arch, s) for s in args.seeds]
    runs = {b: [cache.run(d, arch, method, T, b, s) for s in args.seeds] for b in args.bits}
    ann = _pct(_field(ann_runs, "test_float_ann"))
    table = Table(title=f"{d}, {arch}, {method}, T = {T}: integer SNN test accuracy by weight "
                        f"width (only w_bits changes; seeds {args.seeds}; float ANN {ann})")
    for col in ("w_bits", "integer SNN", "float SNN", "synops (all / hidden)", "s / run"):
        table.add_column(col, justify="right")
    payload = {"dataset": d, "arch": arch, "method": method, "T": T, "seeds": args.seeds,
               "float_ann": _field(ann_runs, "test_float_ann"), "rows": []}
    for b, rs in runs.items():
        syn, _, _ = _stats(_field(rs, "synops"))
        hid, _, _ = _stats(_field(rs, "synops_spiking"))
        sec, _, _ = _stats(_field(rs, "seconds"))
        table.add_row(str(b), _pct(_field(rs, "acc")), _pct(_field(rs, "float_snn")),
                      "—" if syn is None else f"{syn:,.0f} / {hid:,.0f}",
                      "—" if sec is None else f"{sec:.0f}")
        payload["rows"].append({"w_bits": b, "acc": _field(rs, "acc"),
                                "float_snn": _field(rs, "float_snn"),
                                "synops": _field(rs, "synops"), "seconds": _field(rs, "seconds")})
    console.print(table)
    name = f"conv_wbits_{d}_{arch}_{method}_T{T}"
    _write_json(name, payload, console)

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    xs, ys, es = [], [], []
    for b, rs in runs.items():
        mean, std, _ = _stats(_field(rs, "acc"))
        if mean is not None:
            xs.append(b), ys.append(mean * 100), es.append(std * 100)
    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=f"integer SNN ({method})")
    mean, _, _ = _stats(_field(ann_runs, "test_float_ann"))
    if mean is not None:
        ax.axhline(mean * 100, ls="--", color="black", label="float ANN")
    ax.set(xlabel="weight bits", ylabel="test accuracy (%)",
           title=f"{d}, {arch}, {method}, T = {T}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / f"{name}.png", dpi=110)
    plt.close(fig)
    console.print(f"figure: {OUT / (name + '.png')}")
    return payload


# --- (c) SynOp loss --------------------------------------------------------------------------

def synop(cache: Cache, args, console) -> dict:
    from rich.table import Table

    d, arch, T = args.dataset, args.arch, args.T
    base = [cache.run(d, arch, "qrelu", T, 4, s) for s in args.seeds]
    base_hidden, _, _ = _stats(_field(base, "synops_spiking"))
    rows = [("none", None, base)]
    if base_hidden is not None:
        for fraction in args.fractions:
            target = round(base_hidden * fraction, 1)
            rows.append((f"{fraction:g}x", target,
                         [cache.run(d, arch, "qrelu", T, 4, s, synop_target=target,
                                    synop_weight=args.synop_weight) for s in args.seeds]))
    ann_runs = [cache.baseline(d, arch, s) for s in args.seeds]
    table = Table(title=f"SynOp loss (seed 001): {d}, {arch}, qrelu, T = {T}, 4-bit weights, "
                        f"synop_weight {args.synop_weight:g}, seeds {args.seeds} "
                        f"(float ANN {_pct(_field(ann_runs, 'test_float_ann'))})")
    for col in ("S0 (hidden synops)", "integer SNN", "hidden synops / image",
                "all synops / image", "reduction (hidden)"):
        table.add_column(col, justify="right")
    payload = {"dataset": d, "arch": arch, "T": T, "synop_weight": args.synop_weight,
               "seeds": args.seeds, "rows": []}
    points = []
    for label, target, rs in rows:
        acc, _, _ = _stats(_field(rs, "acc"))
        hid, _, _ = _stats(_field(rs, "synops_spiking"))
        syn, _, _ = _stats(_field(rs, "synops"))
        table.add_row("none" if target is None else f"{target:,.0f} ({label})",
                      _pct(_field(rs, "acc")), "—" if hid is None else f"{hid:,.0f}",
                      "—" if syn is None else f"{syn:,.0f}",
                      "—" if hid is None else f"{base_hidden / max(hid, 1e-9):.2f}x")
        payload["rows"].append({"label": label, "synop_target": target,
                                "acc": _field(rs, "acc"),
                                "synops_spiking": _field(rs, "synops_spiking"),
                                "synops": _field(rs, "synops"), "seconds": _field(rs, "seconds")})
        if acc is not None:
            points.append((hid, acc * 100, syn, label))
    console.print(table)
    name = f"conv_synop_{d}_{arch}_T{T}"
    _write_json(name, payload, console)

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, k, xlabel in ((axes[0], 0, "hidden-spike synops / image"),
                          (axes[1], 2, "all synops / image (golden trace)")):
        line = sorted(points, key=lambda p: p[k])  # a curve: SynOps ascending
        ax.plot([p[k] for p in line], [p[1] for p in line], "o-")
        for p in points:
            ax.annotate("no loss" if p[3] == "none" else f"S0={p[3]}", (p[k], p[1]), fontsize=8)
        ax.set(xlabel=xlabel, ylabel="integer SNN test accuracy (%)",
               title=f"QReLU + SynOp loss, {d}, {arch}, T = {T}")
    fig.tight_layout()
    fig.savefig(OUT / f"{name}.png", dpi=110)
    plt.close(fig)
    console.print(f"figure: {OUT / (name + '.png')}")
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench conv",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--grid", action="store_true", help="part (a): the accuracy grid")
    parser.add_argument("--wbits", action="store_true", help="part (b): weight width sweep")
    parser.add_argument("--synop", action="store_true", help="part (c): SynOp-loss curve")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--archs", nargs="+", default=list(ARCHS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--timesteps", type=int, nargs="+", default=list(TIMESTEPS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40,
                        help="epochs of the method's phase (trainer default 40)")
    parser.add_argument("--ann-epochs", type=int, default=30,
                        help="float-ANN pre-training epochs, also the baseline's (default 30)")
    parser.add_argument("--dataset", default=None, choices=DATASETS,
                        help="--wbits/--synop dataset (default: mnist5k for --wbits, digits "
                             "for --synop)")
    parser.add_argument("--arch", default="conv", help="--wbits/--synop architecture")
    parser.add_argument("--method", default="if", help="--wbits method (default if)")
    parser.add_argument("-T", type=int, default=4, help="--wbits/--synop timesteps")
    parser.add_argument("--bits", type=int, nargs="+", default=list(BITS))
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS),
                        help="--synop: S0 as fractions of the plain run's hidden synops")
    parser.add_argument("--synop-weight", type=float, default=1.0)
    parser.add_argument("--cached-only", action="store_true",
                        help="train nothing; tables from the cache ('—' where missing)")
    parser.add_argument("--folder", type=Path, default=FOLDER)
    args = parser.parse_args(argv)
    if not (args.grid or args.wbits or args.synop):
        args.grid = args.wbits = args.synop = True
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from rich.console import Console
    console = Console(width=160)
    cache = Cache(args.folder, args.epochs, args.ann_epochs, args.cached_only, console)
    start = time.monotonic()
    if args.grid:
        grid(cache, args, console)
    dataset = args.dataset
    if args.wbits:
        args.dataset = dataset or "mnist5k"
        wbits(cache, args, console)
    if args.synop:
        args.dataset = dataset or "digits"
        synop(cache, args, console)
    console.print(f"wall {time.monotonic() - start:.0f} s, of which training "
                  f"{cache.trained_seconds:.0f} s (cached runs cost nothing)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
