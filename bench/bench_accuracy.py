"""Digits accuracy of every method on the integer golden model, over T and weight width.

    python -m bench.bench_accuracy                 # full table (about 30-60 min on 2 cores)
    python -m bench.bench_accuracy --quick         # T in {1, 4}, 4-bit only
    python -m bench.bench_accuracy --seeds 0 1 2   # average over seeds

Every SNN figure is the accuracy of the *integer golden network* (``spikeforge.sw.golden``) on
the full digits test split (360 images), converted from the trained model; the float ANN is the
same 64-128-10 network with float weights and ReLU. All methods start from the same float ANN
(trained once per seed, ``ann_epochs``) and then run their own phase (``--epochs``). Runs are
cached in ``out/bench/accuracy/results.json`` (delete it to retrain); the table is printed
and plotted to ``out/bench/accuracy.png``.

Synaptic operations per inference are the golden trace's ``synops`` (input events x fan-out,
all layers) and, separately, seed 001's count (operations elicited by the hidden neurons'
spikes only; the direct-coded input layer costs the same for every method).

The tables of docs/training.md were measured with the direct (analog) encoder, the trainer's
default then; the default is now ``rate`` (what the boards run), so this benchmark pins
``encoder="direct"`` for every method but radix to keep reproducing them. The float ANN is the
trainer's baseline (``test_float_ann``: same architecture, raw pixels, independent of T).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from spikeforge.sw.train import TrainConfig, load_checkpoint
from spikeforge.sw.train.loop import load_data, run_training

OUT = Path("out/bench")
METHODS = ("if", "atif-u", "atif-nu", "radix", "qrelu", "ptl")
TIMESTEPS = (1, 2, 4, 6, 8, 16)
BITS = (8, 6, 4, 2)


def _key(method, T, bits, seed, extra=""):
    return f"{method}|T{T}|w{bits}|s{seed}{extra}"


class Runner:
    def __init__(self, folder: Path, epochs: int, ann_epochs: int, console: Console):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.results_path = folder / "results.json"
        self.results = json.loads(self.results_path.read_text()) \
            if self.results_path.exists() else {}
        self.epochs, self.ann_epochs = epochs, ann_epochs
        self.console = console
        self.data = load_data(TrainConfig())

    def _save(self):
        tmp = self.results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=1, sort_keys=True))
        tmp.replace(self.results_path)

    def ann(self, seed: int) -> dict:
        key = _key("ann", 0, 32, seed)
        path = self.folder / f"ann-s{seed}.pt"
        if key not in self.results or not path.exists():
            start = time.monotonic()
            run_training(TrainConfig(method="ann", ann_epochs=self.ann_epochs, seed=seed,
                                     encoder="direct"), out=path, data=self.data)
            m = load_checkpoint(path).metrics
            self.results[key] = {"acc": m["test_float_ann"], "int_acc": m["test_int"],
                                 "seconds": time.monotonic() - start, "path": str(path)}
            self._save()
        return self.results[key]

    def run(self, method: str, T: int, bits: int, seed: int, **extra) -> dict:
        tag = "".join(f"|{k}={v}" for k, v in sorted(extra.items()))
        key = _key(method, T, bits, seed, tag)
        if key in self.results:
            return self.results[key]
        init = None if method == "radix" else self.ann(seed)["path"]
        # radix is its own one-layer network trained from scratch: give it the ANN's epochs too
        epochs = self.epochs + (self.ann_epochs if method == "radix" else 0)
        config = TrainConfig(method=method, timesteps=T, w_bits=bits, seed=seed,
                             epochs=epochs, init_from=init,
                             encoder=None if method == "radix" else "direct", **extra)
        path = self.folder / (key.replace("|", "_") + ".pt")
        start = time.monotonic()
        run_training(config, out=path, data=self.data)
        m = load_checkpoint(path).metrics
        self.results[key] = {"acc": m["test_int"], "float_snn": m.get("test_float_snn"),
                             "synops": m["test_synops"],
                             "synops_spiking": m["test_synops_spiking"],
                             "seconds": round(time.monotonic() - start, 1)}
        self._save()
        path.unlink()  # keep the cache small; results.json holds the numbers
        self.console.print(f"{key}: integer test accuracy {m['test_int']:.2%}, "
                           f"{m['test_synops']:.0f} synops ({time.monotonic() - start:.0f} s)")
        return self.results[key]


def _mean(values):
    return statistics.fmean(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--ann-epochs", type=int, default=30)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--folder", type=Path, default=OUT / "accuracy")
    args = parser.parse_args(argv)
    console = Console()
    runner = Runner(args.folder, args.epochs, args.ann_epochs, console)
    timesteps = (1, 4) if args.quick else TIMESTEPS
    bits_list = (4,) if args.quick else BITS

    ann = _mean([runner.ann(s)["acc"] for s in args.seeds])
    acc: dict = {}
    for method in METHODS:
        for T in timesteps:
            acc[method, T, 4] = [runner.run(method, T, 4, s) for s in args.seeds]
        for bits in bits_list:
            acc[method, 4, bits] = [runner.run(method, 4, bits, s) for s in args.seeds]

    # SynOp loss (seed 001): QReLU at T = 4, 4-bit weights, targets below the plain run
    base = acc["qrelu", 4, 4]
    base_syn = _mean([r["synops_spiking"] for r in base])
    synop = {}
    for fraction in (0.5, 0.3, 0.2):
        target = round(base_syn * fraction, 1)
        synop[fraction] = [runner.run("qrelu", 4, 4, s, synop_target=target)
                           for s in args.seeds]

    # --- tables ---
    def cell(runs, field="acc"):
        return _mean([r[field] for r in runs])

    table = Table(title=f"Digits test accuracy, integer golden model, 4-bit weights "
                        f"(float ANN: {ann:.2%}; seeds {args.seeds})")
    table.add_column("method")
    for T in timesteps:
        table.add_column(f"T={T}", justify="right")
    table.add_column("synops @T=4 (all / hidden)", justify="right")
    for method in METHODS:
        runs4 = acc[method, 4, 4]
        table.add_row(method, *[f"{cell(acc[method, T, 4]):.2%}" for T in timesteps],
                      f"{cell(runs4, 'synops'):.0f} / {cell(runs4, 'synops_spiking'):.0f}")
    console.print(table)

    table = Table(title="Synaptic operations per inference (golden trace; all layers / "
                        "hidden-spike-driven only), 4-bit weights")
    table.add_column("method")
    for T in timesteps:
        table.add_column(f"T={T}", justify="right")
    for method in METHODS:
        table.add_row(method, *[f"{cell(acc[method, T, 4], 'synops'):.0f} / "
                                f"{cell(acc[method, T, 4], 'synops_spiking'):.0f}"
                                for T in timesteps])
    console.print(table)

    table = Table(title="Digits test accuracy, integer golden model, T = 4, by weight width")
    table.add_column("method")
    for bits in bits_list:
        table.add_column(f"{bits}-bit", justify="right")
    for method in METHODS:
        table.add_row(method, *[f"{cell(acc[method, 4, b]):.2%}" for b in bits_list])
    console.print(table)

    table = Table(title="SynOp loss (seed 001): QReLU, T = 4, 4-bit weights")
    for col in ("S0 (hidden synops)", "test accuracy", "hidden synops", "all synops",
                "reduction (hidden)"):
        table.add_column(col, justify="right")
    table.add_row("none", f"{cell(base):.2%}", f"{base_syn:.0f}", f"{cell(base, 'synops'):.0f}",
                  "1.00x")
    for fraction, runs in synop.items():
        table.add_row(f"{base_syn * fraction:.0f}", f"{cell(runs):.2%}",
                      f"{cell(runs, 'synops_spiking'):.0f}", f"{cell(runs, 'synops'):.0f}",
                      f"{base_syn / max(cell(runs, 'synops_spiking'), 1e-9):.2f}x")
    console.print(table)

    best_low_t = max((cell(acc[m, T, 4]), m, T) for m in METHODS for T in timesteps if T <= 4)
    console.print(f"best SNN at T <= 4 (4-bit): {best_low_t[1]} at T = {best_low_t[2]}: "
                  f"{best_low_t[0]:.2%} vs float ANN {ann:.2%} "
                  f"({(best_low_t[0] - ann) * 100:+.2f} points)")

    # --- figure ---
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for method in METHODS:
        axes[0].plot(timesteps, [cell(acc[method, T, 4]) * 100 for T in timesteps], "o-",
                     label=method)
        axes[1].plot(bits_list, [cell(acc[method, 4, b]) * 100 for b in bits_list], "o-",
                     label=method)
    for ax in axes[:2]:
        ax.axhline(ann * 100, ls="--", color="black", label="float ANN")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=8)
    axes[0].set(xlabel="timesteps T", xscale="log", ylim=(85, 100),
                title="integer SNN, 4-bit weights (radix T=16 off scale)")
    axes[0].set_xticks(timesteps, [str(t) for t in timesteps])
    axes[1].set(xlabel="weight bits", title="integer SNN, T = 4")
    xs = [base_syn] + [cell(r, "synops_spiking") for r in synop.values()]
    ys = [cell(base) * 100] + [cell(r) * 100 for r in synop.values()]
    axes[2].plot(xs, ys, "o-")
    for x, y, label in zip(xs, ys, ["no SynOp loss"] + [f"S0={f:g}x" for f in synop],
                           strict=True):
        axes[2].annotate(label, (x, y), fontsize=8)
    axes[2].set(xlabel="hidden-spike synops / inference", ylabel="test accuracy (%)",
                title="QReLU + SynOp loss, T = 4")
    fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / "accuracy.png", dpi=120)
    console.print(f"figure: {OUT / 'accuracy.png'}; numbers: {runner.results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
