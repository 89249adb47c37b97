"""Classify images on a board over the UART link: what ``spikeforge run`` does, as functions.

::

    from spikeforge.sw.link import LinkClient, SerialTransport
    from spikeforge.sw.run import classify_images, connect, load_images, load_weights
    images, labels = load_images("digits:test")
    transport = SerialTransport.open("/dev/ttyUSB1")
    try:
        client = LinkClient(transport)
        board = connect(client)
        load_weights(client, board, network)   # does nothing without board.spram_layers
        results = list(classify_images(client, images, labels=labels, golden=network))
    finally:
        transport.close()

Pixels are sent as they are: they must already be the network's integer pixels
(``0 .. 2**pixel_bits - 1``; the board refuses others).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spikeforge.sw.data import load_dataset
from spikeforge.sw.golden import Network
from spikeforge.sw.interface import stream_supported
from spikeforge.sw.link import LinkClient, LinkInfo, register_address

__all__ = ["Board", "Classification", "load_images", "connect", "load_weights",
           "classify_images"]


def load_images(source: str, *, data_root=None) -> tuple[list[list[int]], list[int] | None]:
    """``(images, labels)`` from ``source``, ``labels`` ``None`` when the source has none:

    * a dataset name of :mod:`spikeforge.sw.data` with an optional split: ``digits`` (test
      split), ``digits:val``, ``mnist:test`` (MNIST needs ``data_root``);
    * a ``.npy`` file: one image (``[n_inputs]``) or many (``[N, ...]``, flattened) of integer
      pixels;
    * a ``.npz`` file with ``images`` (and optionally ``labels``).

    Raises :class:`ValueError` (a missing file, an ``.npz`` without ``images``, a
    :class:`~spikeforge.sw.data.DatasetError`) or :class:`OSError` (an unreadable file).
    """
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
    name, _, split = source.partition(":")
    pixels, labels = load_dataset(name, root=data_root, split=split or "test")
    return pixels.tolist(), labels.tolist()


@dataclass(frozen=True)
class Board:
    """What :func:`connect` read from the board: its ``INFO`` (inputs, outputs, pixel width),
    its layer count, and the layers whose weights live in SPRAM (empty after configuration:
    :func:`load_weights` fills them)."""

    info: LinkInfo
    n_layers: int
    spram_layers: tuple[int, ...]


@dataclass(frozen=True)
class Classification:
    """One image's result: the board's prediction and scores, the label if known, and whether
    the golden model computes the same prediction and scores (``None`` without one)."""

    index: int
    prediction: int
    scores: list[int]
    label: int | None = None
    golden_agrees: bool | None = None


def connect(client: LinkClient) -> Board:
    """Identify the accelerator behind ``client`` and read what it is.

    Raises :class:`~spikeforge.sw.link.LinkError` if it does not answer or is not a spikeforge
    accelerator."""
    client.identify()
    info = client.info()
    n_layers = client.read_register(register_address("N_LAYERS"))
    spram = tuple(k for k in range(n_layers) if client.weight_info(k).in_ram)
    return Board(info=info, n_layers=n_layers, spram_layers=spram)


def load_weights(client: LinkClient, board: Board, network: Network | None, *,
                 progress: Callable[[int, int, int], None] | None = None) -> list[int]:
    """Load the SPRAM layers' weights of ``board`` from ``network`` (the network the bitstream
    was built from); returns the layers loaded (none when ``board`` has no SPRAM layers).
    Given a ``network``, first checks that the board runs it (every layer's descriptor
    registers, :meth:`~spikeforge.sw.link.LinkClient.check_network`), whether or not it loads
    anything.

    ``progress(layer, chunks_done, chunks_total)`` follows each frame. Raises
    :class:`ValueError` if the board needs weights and ``network`` is ``None``, and
    :class:`~spikeforge.sw.link.LinkError` if the board refuses them."""
    if network is not None:
        client.check_network(network)
    if not board.spram_layers:
        return []
    if network is None:
        raise ValueError(f"the weights of layer {', '.join(map(str, board.spram_layers))} live "
                         "in SPRAM, which starts empty after configuration: pass the network "
                         "the bitstream was built from to load them")
    lanes = client.read_register(register_address("LANES"))
    return client.load_network_weights(network, lanes, progress=progress)


def classify_images(client: LinkClient, images: Sequence[Sequence[int]], *,
                    labels: Sequence[int] | None = None,
                    golden: Network | None = None) -> Iterator[Classification]:
    """Classify ``images`` on the board in order, yielding a :class:`Classification` as each
    result arrives; with ``golden`` each result is checked against the golden model.

    Images stream (:meth:`~spikeforge.sw.link.LinkClient.classify_stream`: the board computes
    one while the line carries the next) when the board's pixels fit STREAM tokens
    (``pixel_bits <= 7``), else they go one ``RUN`` each. Raises
    :class:`~spikeforge.sw.link.LinkError` (no or a bad reply) or :class:`ValueError` (an image
    the board refuses)."""
    images = list(images)  # read twice: by the client and for the results
    info = client.info()
    if stream_supported(info.pixel_bits):
        results = client.classify_stream(images)
    else:
        results = (client.classify(image) for image in images)
    for index, (image, (scores, prediction)) in enumerate(zip(images, results, strict=True)):
        agrees = None
        if golden is not None:
            expected = golden.run(torch.tensor([image], dtype=torch.int64))
            agrees = (int(expected.prediction[0]) == prediction
                      and expected.output[0].tolist() == scores)
        yield Classification(index=index, prediction=prediction, scores=scores,
                             label=labels[index] if labels else None, golden_agrees=agrees)
