"""``spikeforge run --port PORT IMAGE_OR_DATASET``: classify images on a board over the UART link.

``IMAGE_OR_DATASET`` is one of

* a dataset name of :mod:`spikeforge.sw.data` with an optional split: ``digits`` (test split),
  ``digits:val``, ``mnist:test`` (MNIST needs ``--data-root``);
* a ``.npy`` file: one image (``[n_inputs]``) or many (``[N, n_inputs]``) of integer pixels;
* a ``.npz`` file with ``images`` (and optionally ``labels``).

Pixels are sent as they are: they must already be the network's integer pixels
(``0 .. 2**pixel_bits - 1``; the board refuses others). With labels, accuracy is printed; with
``--export DIR`` each board result is also checked against the golden model. Images stream
(the link's ``STREAM``: the board computes one while the line carries the next) when the
board's pixels fit 7 bits, else they go one ``RUN`` each. The work is done by
:mod:`spikeforge.sw.run`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from spikeforge.sw.export import ExportError, load_network
from spikeforge.sw.link import BAUD, LinkClient, LinkError, SerialTransport
from spikeforge.sw.run import classify_images, connect, load_images, load_weights

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="IMAGE_OR_DATASET",
                        help="dataset name[:split], or a .npy / .npz file of integer pixels")
    parser.add_argument("--port", required=True,
                        help="serial port of the board (e.g. /dev/ttyUSB1) or a pyserial URL")
    parser.add_argument("--baud", type=int, default=BAUD,
                        help=f"line rate (default {BAUD}, the boards' rate)")
    parser.add_argument("--limit", type=int, default=None, help="classify at most N images")
    parser.add_argument("--data-root", default=None, help="folder of the MNIST IDX files")
    parser.add_argument("--export", default=None,
                        help="export folder: check every result against the golden model")
    parser.add_argument("--timeout", type=float, default=2.0, help="reply timeout in seconds")
    parser.add_argument("--counters", action="store_true", help="print the hardware counters")
    parser.add_argument("--json", action="store_true", help="print results as JSON lines")


def run(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"spikeforge run: error: {message}", file=sys.stderr)
        return 1

    try:
        images, labels = load_images(args.source, data_root=args.data_root)
    except (ValueError, OSError) as error:
        return fail(str(error))
    if args.limit is not None:
        images = images[: args.limit]
        labels = labels[: args.limit] if labels else labels
    golden = None
    if args.export:
        try:
            golden = load_network(args.export)
        except (ExportError, OSError) as error:
            return fail(str(error))
    try:
        transport = SerialTransport.open(args.port, args.baud)
    except Exception as error:  # pyserial raises SerialException (an OSError) or ValueError
        return fail(f"cannot open {args.port}: {error}")
    client = LinkClient(transport, timeout=args.timeout)
    correct = mismatches = 0
    start = time.monotonic()
    try:
        board = connect(client)
        info = board.info
        print(f"board: {info.n_inputs} inputs, {info.n_outputs} outputs, "
              f"{info.pixel_bits}-bit pixels", file=sys.stderr)
        if board.spram_layers and golden is None:
            return fail(f"the weights of layer {', '.join(map(str, board.spram_layers))} live "
                        "in SPRAM, which starts empty after configuration: pass --export DIR "
                        "(the export the bitstream was built from) to load them")
        load_start = time.monotonic()

        def progress(layer, done, total):
            if done == total:
                print(f"loaded layer {layer}'s weights: {total} words in "
                      f"{time.monotonic() - load_start:.1f} s", file=sys.stderr)

        load_weights(client, board, golden, progress=progress)
        for result in classify_images(client, images, labels=labels, golden=golden):
            correct += result.label is not None and result.prediction == result.label
            mismatches += result.golden_agrees is False
            if args.json:
                print(json.dumps({"index": result.index, "prediction": result.prediction,
                                  "scores": result.scores, "label": result.label,
                                  "golden_agrees": result.golden_agrees}))
            else:
                extra = f"  label {result.label}" if result.label is not None else ""
                if result.golden_agrees is not None:
                    extra += "  golden ok" if result.golden_agrees else "  GOLDEN MISMATCH"
                print(f"{result.index:5d}: class {result.prediction}  scores {result.scores}"
                      f"{extra}")
        if args.counters:
            counters = client.read_counters()
            print(f"cycles {counters.cycles}, synops {list(counters.synops)}, "
                  f"spikes {list(counters.spikes)}, status 0x{counters.status:x}")
    except (LinkError, ValueError) as error:
        return fail(str(error))
    finally:
        transport.close()
    elapsed = time.monotonic() - start
    if labels:
        print(f"accuracy {correct}/{len(images)} = {correct / max(1, len(images)):.2%}",
              file=sys.stderr)
    print(f"{len(images)} images in {elapsed:.1f} s", file=sys.stderr)
    return 1 if mismatches else 0
