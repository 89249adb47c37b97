"""``spikeforge run --port PORT IMAGE_OR_DATASET``: classify images on a board over the UART link.

``IMAGE_OR_DATASET`` is one of

* a dataset name of :mod:`sw.data` with an optional split: ``digits`` (test split),
  ``digits:val``, ``mnist:test`` (MNIST needs ``--data-root``);
* a ``.npy`` file: one image (``[n_inputs]``) or many (``[N, n_inputs]``) of integer pixels;
* a ``.npz`` file with ``images`` (and optionally ``labels``).

Pixels are sent as they are: they must already be the network's integer pixels
(``0 .. 2**pixel_bits - 1``; the board refuses others). With labels, accuracy is printed; with
``--export DIR`` each board result is also checked against the golden model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["add_arguments", "run", "load_images"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="IMAGE_OR_DATASET",
                        help="dataset name[:split], or a .npy / .npz file of integer pixels")
    parser.add_argument("--port", required=True,
                        help="serial port of the board (e.g. /dev/ttyUSB1) or a pyserial URL")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--limit", type=int, default=None, help="classify at most N images")
    parser.add_argument("--data-root", default=None, help="folder of the MNIST IDX files")
    parser.add_argument("--export", default=None,
                        help="export folder: check every result against the golden model")
    parser.add_argument("--timeout", type=float, default=2.0, help="reply timeout in seconds")
    parser.add_argument("--counters", action="store_true", help="print the hardware counters")
    parser.add_argument("--json", action="store_true", help="print results as JSON lines")


def load_images(source: str, *, data_root=None):
    """``(images: list[list[int]], labels: list[int] | None)`` from a dataset name or a file."""
    import numpy as np

    path = Path(source)
    if path.suffix == ".npy" and path.exists():
        array = np.load(path)
        array = array[None, :] if array.ndim == 1 else array.reshape(array.shape[0], -1)
        return array.astype(int).tolist(), None
    if path.suffix == ".npz" and path.exists():
        with np.load(path) as data:
            if "images" not in data:
                raise ValueError(f"{path} has no 'images' array (it has {', '.join(data.files)})")
            images = data["images"].reshape(data["images"].shape[0], -1).astype(int).tolist()
            labels = data["labels"].astype(int).tolist() if "labels" in data else None
        return images, labels
    if path.suffix in (".npy", ".npz"):
        raise ValueError(f"{path} does not exist")
    from sw.data import load_dataset

    name, _, split = source.partition(":")
    pixels, labels = load_dataset(name, data_root, split or "test") if data_root else \
        load_dataset(name, split=split or "test")
    return pixels.tolist(), labels.tolist()


def run(args: argparse.Namespace) -> int:
    from sw.link import LinkClient, LinkError, SerialTransport, register_address

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
        import torch

        from sw.export import ExportError, load_network

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
        client.identify()
        info = client.info()
        print(f"board: {info.n_inputs} inputs, {info.n_outputs} outputs, "
              f"{info.pixel_bits}-bit pixels", file=sys.stderr)
        n_layers = client.read_register(register_address("N_LAYERS"))
        in_spram = [k for k in range(n_layers) if client.weight_info(k).in_ram]
        if in_spram and golden is None:
            return fail(f"the weights of layer {', '.join(map(str, in_spram))} live in SPRAM, "
                        "which starts empty after configuration: pass --export DIR (the export "
                        "the bitstream was built from) to load them")
        if in_spram:
            lanes = client.read_register(register_address("LANES"))
            load_start = time.monotonic()

            def progress(layer, done, total):
                if done == total:
                    print(f"loaded layer {layer}'s weights: {total} words in "
                          f"{time.monotonic() - load_start:.1f} s", file=sys.stderr)

            client.load_network_weights(golden, lanes, progress=progress)
        for index, image in enumerate(images):
            scores, prediction = client.classify(image)
            label = labels[index] if labels else None
            correct += label is not None and prediction == label
            agree = None
            if golden is not None:
                expected = golden.run(torch.tensor([image], dtype=torch.int64))
                agree = (int(expected.prediction[0]) == prediction
                         and expected.output[0].tolist() == scores)
                mismatches += not agree
            if args.json:
                print(json.dumps({"index": index, "prediction": prediction, "scores": scores,
                                  "label": label, "golden_agrees": agree}))
            else:
                extra = f"  label {label}" if label is not None else ""
                extra += "" if agree is None else ("  golden ok" if agree else "  GOLDEN MISMATCH")
                print(f"{index:5d}: class {prediction}  scores {scores}{extra}")
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="spikeforge run")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
