"""Export a golden :class:`~spikeforge.sw.golden.Network` to the folder the gateware is built
from, and read it back.

One export folder holds ``manifest.json`` and, per neuron layer ``k`` (dense or convolution),
the weight ROM in three forms that carry the same words (``docs/rom-layout.md``): ``layerK.hex``
(``$readmemh``), ``layerK.coe`` (Xilinx) and ``layerK.mif`` (Intel); a sum-pooling layer has no
ROM. Everything else a layer needs (bias, thresholds, leak shift, ``v_init``, a convolution's or
pooling layer's shapes) is a register reset value or an elaboration parameter in the hardware
and lives in the manifest. The format is specified in ``docs/export-format.md``: schema version
1 (dense layers only, what a dense-only network is written as) and 2 (adds ``kind`` and the
convolution and pooling layers).

:func:`hardware_support` says why a network cannot run on the current hardware (the direct
encoder, convolution or pooling layers); ``spikeforge export`` prints it as a note, and
``spikeforge sim``/``rtl``/``synth`` refuse such an export (:func:`require_hardware_support`)
before they build anything.

Writing is atomic: the files go to a temporary sibling folder, which is loaded back and compared
with the network before it is renamed into place. Loading verifies everything (hashes, widths,
shapes, ranges) and refuses with an :class:`ExportError` that names the field or file.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spikeforge._version import __version__
from spikeforge.hw.rom import (
    RomLayoutError,
    conv_rom_shape,
    format_hex,
    pack_conv_weights,
    pack_weights,
    parse_hex,
    rom_shape,
    unpack_conv_weights,
    unpack_weights,
)
from spikeforge.sw.golden import (
    Compare,
    ContractError,
    ConvLayer,
    DenseLayer,
    Encoder,
    Network,
    Reset,
    SumPoolLayer,
)

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "ExportError",
    "UnsupportedNetworkError",
    "LayerManifest",
    "Manifest",
    "export_network",
    "format_coe",
    "format_mif",
    "hardware_support",
    "require_hardware_support",
    "schema_version_for",
    "load_manifest",
    "load_network",
    "load_source",
]

#: Newest version of the folder format, the one this module writes for a network with a
#: convolution or pooling layer. A dense-only network is written as version 1, byte for byte the
#: format before version 2 existed, so that older readers keep reading it
#: (:func:`schema_version_for`). Loading reads every version in :data:`SCHEMA_VERSIONS` and
#: refuses any other (a newer one with an "upgrade spikeforge" message).
SCHEMA_VERSION = 2
SCHEMA_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
#: The threshold comparison every exported network uses (``V >= theta``, DESIGN section 1).
THRESHOLD_COMPARE = ">="

_ROM_FORMATS = ("hex", "coe", "mif")
_EXPORT_FILE = re.compile(r"^(manifest\.json|layer[0-9]+\.(hex|coe|mif))$")
_TOP_KEYS = {"schema_version", "spikeforge_version", "timesteps", "encoder", "lanes",
             "threshold_compare", "layers", "files", "metadata"}
#: A dense layer's fields (schema_version 1 has no others; 2 adds ``kind``).
_LAYER_KEYS = {"name", "fan_in", "fan_out", "w_bits", "v_bits", "bias", "theta", "leak_shift",
               "fire_mode", "v_init", "fires", "scale", "rom"}
_SHAPE_KEYS = {"input_shape", "output_shape", "kernel", "stride", "padding"}
#: schema_version 2: how a neuron layer compares and resets (docs/contract.md).
_MODE_KEYS = {"compare", "reset"}
#: schema_version 2: the fields of each layer kind.
_KIND_KEYS = {
    "dense": _LAYER_KEYS | _MODE_KEYS | {"kind"},
    "conv": _LAYER_KEYS | _MODE_KEYS | _SHAPE_KEYS | {"kind", "in_channels", "out_channels"},
    "sumpool": _SHAPE_KEYS | {"kind", "name", "fan_in", "fan_out", "scale"},
}
_V2_ONLY_KEYS = set().union(*_KIND_KEYS.values()) - _LAYER_KEYS
_ROM_KEYS = {"width", "depth", *_ROM_FORMATS}


class ExportError(ValueError):
    """An export folder (or a network to export) is inconsistent. The message names the file
    and, inside ``manifest.json``, the field (``layers[1].theta[0]``)."""


class UnsupportedNetworkError(ExportError):
    """A valid export that the current hardware cannot run (:func:`hardware_support`); the golden
    model (``spikeforge eval``) still runs it."""


@dataclass(frozen=True)
class LayerManifest:
    """One verified ``layers[k]`` entry of a manifest, with its ROM words.

    ``kind`` is ``"dense"``, ``"conv"`` or ``"sumpool"``. The shape fields (``input_shape``,
    ``output_shape`` as ``(C, H, W)``, ``kernel``, ``stride``, ``padding`` as ``(rows,
    columns)``) are ``None`` for a dense layer. A sum-pooling layer has no neurons and no ROM:
    its neuron fields are ``None`` (``bias``/``theta`` empty), ``rom_width = rom_depth = 0``,
    ``rom_files`` empty and ``words`` empty.
    """

    name: str
    fan_in: int
    fan_out: int
    w_bits: int | None
    v_bits: int | None
    bias: tuple[int, ...]
    theta: tuple[int, ...]
    leak_shift: int | None
    fire_mode: str | None
    v_init: int | None
    fires: bool | None
    scale: float | None
    rom_width: int
    rom_depth: int
    rom_files: Mapping[str, str]  # "hex" / "coe" / "mif" -> file name in the folder
    words: tuple[int, ...]  # the ROM contents, word 0 first (the gateware's Memory init)
    kind: str = "dense"
    compare: str | None = None  # ">=" or ">" (None for a pooling layer)
    reset: str | None = None  # "subtract" or "zero" (None for a pooling layer)
    input_shape: tuple[int, int, int] | None = None
    output_shape: tuple[int, int, int] | None = None
    kernel: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    padding: tuple[int, int] | None = None


@dataclass(frozen=True)
class Manifest:
    """A verified export folder: every field of ``manifest.json`` plus the network it holds."""

    folder: Path
    schema_version: int
    spikeforge_version: str
    timesteps: int
    encoder: Encoder
    lanes: int
    layers: tuple[LayerManifest, ...]
    files: Mapping[str, str]  # file name -> SHA-256 (hex)
    metadata: Mapping[str, Any]
    network: Network = field(repr=False)

    @property
    def scales(self) -> list[float | None]:
        """Per-layer ``scale`` values, in the form :func:`export_network` takes."""
        return [layer.scale for layer in self.layers]


# -- writing ---------------------------------------------------------------------------------


def _json_text(value: Any, indent: int = 0, path: str = "manifest") -> str:
    """Deterministic JSON: sorted keys, two-space indent, lists of scalars on one line."""
    pad = "  " * indent
    if value is None or isinstance(value, (bool, str)):
        return json.dumps(value, ensure_ascii=True)
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExportError(f"{path} = {value!r}: JSON holds finite numbers only")
        return json.dumps(value)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        for key in value:
            if not isinstance(key, str):
                raise ExportError(f"{path} has key {key!r}; JSON keys must be strings")
        items = [f"{pad}  {json.dumps(key, ensure_ascii=True)}: "
                 f"{_json_text(value[key], indent + 1, f'{path}.{key}')}"
                 for key in sorted(value)]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        parts = [_json_text(item, indent + 1, f"{path}[{i}]") for i, item in enumerate(value)]
        if all(not isinstance(item, (Mapping, list, tuple)) for item in value):
            return "[" + ", ".join(parts) + "]"
        return "[\n" + ",\n".join(f"{pad}  {part}" for part in parts) + f"\n{pad}]"
    raise ExportError(f"{path} is a {type(value).__name__}, which JSON cannot hold")


def format_coe(words: Sequence[int], width: int, title: str = "") -> str:
    """Xilinx ``.coe`` text: radix 16, one word a line, ``ceil(width/4)`` digits."""
    body = format_hex(words, width).split()
    header = f"; spikeforge weight ROM{' ' + title if title else ''}: " \
             f"{len(body)} words x {width} bits\n"
    lines = ",\n".join(body)
    return (header + "memory_initialization_radix=16;\n"
            + "memory_initialization_vector=\n" + lines + ";\n")


def format_mif(words: Sequence[int], width: int, title: str = "") -> str:
    """Intel (Quartus) ``.mif`` text: ``WIDTH``, ``DEPTH``, unsigned addresses, hex data."""
    body = format_hex(words, width).split()
    header = f"-- spikeforge weight ROM{' ' + title if title else ''}: " \
             f"{len(body)} words x {width} bits\n"
    content = "".join(f"\t{address} : {word};\n" for address, word in enumerate(body))
    return (header + f"WIDTH={width};\nDEPTH={len(body)};\n\nADDRESS_RADIX=UNS;\n"
            "DATA_RADIX=HEX;\n\nCONTENT BEGIN\n" + content + "END;\n")


def _check_scales(scales, network: Network) -> list[float | None]:
    if scales is None:
        return [None] * len(network.layers)
    scales = list(scales)
    if len(scales) != len(network.layers):
        raise ExportError(f"scales has {len(scales)} entries but the network has "
                          f"{len(network.layers)} layers")
    out = []
    for k, scale in enumerate(scales):
        if scale is None:
            out.append(None)
            continue
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
                or not math.isfinite(scale):
            raise ExportError(f"scales[{k}] must be a finite number or None, not {scale!r}")
        out.append(float(scale))
    return out


def schema_version_for(network: Network) -> int:
    """The ``schema_version`` :func:`export_network` writes for ``network``: 1 when every layer
    is dense with the default compare (``>=``) and reset (``subtract``), the format older
    spikeforge versions read; else 2 (:data:`SCHEMA_VERSION`)."""
    default_modes = all(layer.compare is Compare.GE and layer.reset is Reset.SUBTRACT
                        for layer in network.layers if not isinstance(layer, SumPoolLayer))
    return 1 if network.is_dense and default_modes else SCHEMA_VERSION


def _build(network: Network, lanes: int, metadata: Mapping | None,
           scales) -> dict[str, str]:
    """Every file of the export folder, name -> text."""
    if not isinstance(network, Network):
        raise ExportError(f"network must be a spikeforge.sw.golden.Network, "
                          f"not {type(network).__name__}")
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        raise ExportError(f"lanes must be an integer >= 1, not {lanes!r}")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise ExportError(f"metadata must be a dict, not {type(metadata).__name__}")
    scales = _check_scales(scales, network)
    version = schema_version_for(network)
    files: dict[str, str] = {}
    layers = []
    for k, layer in enumerate(network.layers):
        entry = {"name": layer.name, "fan_in": layer.fan_in, "fan_out": layer.fan_out,
                 "scale": scales[k]}
        if version >= 2:
            entry["kind"] = layer.kind
        if isinstance(layer, (ConvLayer, SumPoolLayer)):
            entry.update(input_shape=list(layer.input_shape),
                         output_shape=list(layer.output_shape), kernel=list(layer.kernel),
                         stride=list(layer.stride), padding=list(layer.padding))
        if isinstance(layer, SumPoolLayer):  # no neurons, no ROM
            layers.append(entry)
            continue
        if isinstance(layer, ConvLayer):
            entry.update(in_channels=layer.in_channels, out_channels=layer.out_channels)
            width, depth = conv_rom_shape(layer.in_channels, layer.out_channels, layer.kernel,
                                          lanes, layer.w_bits)
            words = pack_conv_weights(layer.weight, lanes, layer.w_bits)
        else:
            width, depth = rom_shape(layer.fan_in, layer.fan_out, lanes, layer.w_bits)
            words = pack_weights(layer.weight, lanes, layer.w_bits)
        title = f"layer{k} ({json.dumps(layer.name)}), lanes={lanes}, w_bits={layer.w_bits}"
        names = {kind: f"layer{k}.{kind}" for kind in _ROM_FORMATS}
        files[names["hex"]] = format_hex(words, width)
        files[names["coe"]] = format_coe(words, width, title)
        files[names["mif"]] = format_mif(words, width, title)
        entry.update({
            "w_bits": layer.w_bits,
            "v_bits": layer.v_bits,
            "bias": layer.bias.tolist(),
            "theta": layer.theta.tolist(),
            "leak_shift": layer.leak_shift,
            "fire_mode": layer.fire_mode.value,
            "v_init": layer.v_init,
            "fires": layer.fires,
            "rom": {"width": width, "depth": depth, **names},
        })
        if version >= 2:
            entry.update(compare=layer.compare.value, reset=layer.reset.value)
        layers.append(entry)
    manifest = {
        "schema_version": version,
        "spikeforge_version": __version__,
        "timesteps": network.timesteps,
        "encoder": {"kind": network.encoder.kind.value, "pixel_bits": network.encoder.pixel_bits},
        "lanes": lanes,
        "threshold_compare": THRESHOLD_COMPARE,
        "layers": layers,
        "files": {name: hashlib.sha256(text.encode("ascii")).hexdigest()
                  for name, text in files.items()},
        "metadata": dict(metadata),
    }
    files[MANIFEST_NAME] = _json_text(manifest) + "\n"
    return files


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="ascii", newline="\n") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())


def _network_difference(a: Network, b: Network) -> str | None:
    """The first field in which two networks differ, or None."""
    if a.timesteps != b.timesteps:
        return "timesteps"
    if a.encoder != b.encoder:
        return "encoder"
    if len(a.layers) != len(b.layers):
        return "layers"
    for k, (x, y) in enumerate(zip(a.layers, b.layers, strict=True)):
        if type(x) is not type(y):
            return f"layers[{k}].kind"
        for name in x.__dataclass_fields__:
            u, v = getattr(x, name), getattr(y, name)
            same = torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v
            if not same:
                return f"layers[{k}].{name}"
    return None


def _check_replaceable(folder: Path) -> None:
    """An existing folder is replaced only if it is empty or holds nothing but an export."""
    if folder.is_symlink() or not folder.is_dir():
        raise ExportError(f"{folder} exists and is not a folder (or is a symbolic link); "
                          "refusing to replace it")
    entries = sorted(p.name for p in folder.iterdir())
    if entries and MANIFEST_NAME not in entries:
        raise ExportError(f"{folder} is not empty and holds no {MANIFEST_NAME}; refusing to "
                          "replace a folder that is not a spikeforge export")
    for name in entries:
        if not _EXPORT_FILE.match(name) or not (folder / name).is_file():
            raise ExportError(f"{folder} holds {name!r}, which is not part of an export; "
                              "refusing to replace it (move it away or choose another --out)")


def _sibling(folder: Path, tag: str) -> Path:
    while True:
        path = folder.parent / f".{folder.name}.{tag}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def export_network(network: Network, folder, *, lanes: int, metadata: Mapping | None = None,
                   scales: Sequence[float | None] | None = None) -> Path:
    """Write ``network`` as an export folder for an array of ``lanes`` lanes; return its path.

    ``metadata`` is a JSON-able dict stored verbatim under the manifest's ``metadata`` key
    (training run, accuracy, ...). ``scales`` gives each layer's optional float ``scale`` (the
    real value of one integer unit, for users; the hardware ignores it).

    The folder is written to a temporary sibling, verified by loading it back, then renamed into
    place. An existing ``folder`` is replaced only on success and only if it is empty or holds
    nothing but a previous export; on any failure nothing is left behind.
    """
    files = _build(network, lanes, metadata, scales)
    folder = Path(os.path.abspath(folder))  # "." and ".." resolved; symbolic links are not
    if not folder.name:
        raise ExportError(f"{folder} cannot be an export folder (it has no parent)")
    if folder.exists() or folder.is_symlink():
        _check_replaceable(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = _sibling(folder, "tmp")
    old = None
    try:
        for name in sorted(files):
            _write_text(temporary / name, files[name])
        loaded = load_manifest(temporary)
        difference = _network_difference(loaded.network, network)
        if difference is None and loaded.scales != _check_scales(scales, network):
            difference = "scales"
        if difference is None and loaded.metadata != json.loads(json.dumps(metadata or {})):
            difference = "metadata"
        if difference is not None:
            raise ExportError(f"{temporary}: the written export does not load back to the same "
                              f"network ({difference} differs); nothing was written")
        if not folder.exists():
            os.rename(temporary, folder)
        elif _exchange(temporary, folder):
            old = temporary  # now holds the previous export
        else:  # two renames; a crash between them leaves the old export at `old`
            old = folder.parent / f".{folder.name}.old-{secrets.token_hex(4)}"
            os.rename(folder, old)
            try:
                os.rename(temporary, folder)
            except BaseException:
                os.rename(old, folder)
                old = None
                raise
    except BaseException:
        if old is not temporary:
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _sync_folder(folder.parent)
    return folder


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the system or file system cannot, and the caller falls back to two
    renames.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _sync_folder(folder: Path) -> None:
    """Make a rename durable (best effort: not every system can open a folder)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# -- reading ---------------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Fields:
    """Typed access to one JSON object, with errors that name ``file: path.key``."""

    def __init__(self, where: str, obj, path: str, allowed: set[str],
                 what: str = f"schema_version {SCHEMA_VERSION}"):
        if not isinstance(obj, dict):
            raise ExportError(f"{where}: {path or 'the manifest'} must be a JSON object")
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise ExportError(f"{where}: {self._name(path, unknown[0])} is not a field of "
                              f"{what}")
        self.where, self.obj, self.path = where, obj, path

    @staticmethod
    def _name(path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def fail(self, key: str, message: str):
        raise ExportError(f"{self.where}: {self._name(self.path, key)} {message}")

    def get(self, key: str, optional: bool = False):
        if key not in self.obj:
            if optional:
                return None
            self.fail(key, "is missing")
        return self.obj[key]

    def integer(self, key: str, minimum: int | None = None) -> int:
        value = self.get(key)
        if not _is_int(value):
            self.fail(key, f"must be an integer, not {value!r}")
        if not -(1 << 63) <= value < (1 << 63):
            self.fail(key, f"= {value} is beyond the 64-bit integer range")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {minimum}, got {value}")
        return value

    def string(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {value!r}")
        return value

    def boolean(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {value!r}")
        return value

    def integers(self, key: str) -> list[int]:
        value = self.get(key)
        if not isinstance(value, list):
            self.fail(key, f"must be a list of integers, not {value!r}")
        for i, item in enumerate(value):
            if not _is_int(item):
                self.fail(f"{key}[{i}]", f"must be an integer, not {item!r}")
            if not -(1 << 63) <= item < (1 << 63):
                self.fail(f"{key}[{i}]", f"= {item} is beyond the 64-bit integer range")
        return value

    def shape(self, key: str, length: int, minimum: int) -> tuple[int, ...]:
        """A list of ``length`` integers, each ``>= minimum`` (a shape, kernel, stride, ...)."""
        value = self.get(key)
        if not isinstance(value, list) or len(value) != length:
            self.fail(key, f"must be a list of {length} integers, not {value!r}")
        for i, item in enumerate(value):
            if not _is_int(item):
                self.fail(f"{key}[{i}]", f"must be an integer, not {item!r}")
            if item < minimum:
                self.fail(f"{key}[{i}]", f"must be >= {minimum}, got {item}")
            if item >= 1 << 31:
                self.fail(f"{key}[{i}]", f"= {item} is beyond the 32-bit range of a shape")
        return tuple(value)

    def file_name(self, key: str) -> str:
        value = self.string(key)
        if not value or value in (".", "..") or "/" in value or "\\" in value \
                or value == MANIFEST_NAME:
            self.fail(key, f"= {value!r} must be a plain file name inside the export folder")
        return value


def _refuse_constant(name: str):
    raise ExportError(f"{MANIFEST_NAME}: {name} is not a JSON number (JSON holds finite numbers)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise ExportError(f"{MANIFEST_NAME}: key {key!r} appears twice in one object")
        result[key] = value
    return result


def _read_text(folder: Path, name: str) -> str:
    path = folder / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ExportError(f"{path}: file is missing") from None
    except OSError as error:
        raise ExportError(f"{path}: cannot be read ({error.strerror})") from None
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as error:
        raise ExportError(f"{path}: byte {error.start} is not ASCII") from None


def _first_difference(name: str, found: str, expected: str) -> str:
    found_lines, expected_lines = found.splitlines(), expected.splitlines()
    for number, (a, b) in enumerate(zip(found_lines, expected_lines, strict=False), start=1):
        if a != b:
            return f"{name}: line {number} is {a[:60]!r}, expected {b[:60]!r} (the word in the hex)"
    return (f"{name}: has {len(found_lines)} lines, expected {len(expected_lines)} "
            "(it must hold the same words as the hex file)")


def _layer_fields(where: str, raw, k: int, version: int) -> tuple[_Fields, str]:
    """``layers[k]`` as typed fields, and its kind; unknown fields refused for the version."""
    path = f"layers[{k}]"
    if not isinstance(raw, dict):
        raise ExportError(f"{where}: {path} must be a JSON object")
    if version == 1:
        newer = sorted(set(raw) & _V2_ONLY_KEYS, key=lambda key: (key in _MODE_KEYS, key))
        if newer:
            raise ExportError(f"{where}: {path}.{newer[0]} is a schema_version 2 field "
                              "(convolution and pooling layers, compare and reset modes); a "
                              "schema_version 1 manifest holds dense layers only, with the "
                              "default modes")
        return _Fields(where, raw, path, _LAYER_KEYS, "schema_version 1"), "dense"
    if "kind" not in raw:
        raise ExportError(f"{where}: {path}.kind is missing (schema_version {version} names "
                          "every layer's kind)")
    kind = raw["kind"]
    if not isinstance(kind, str) or kind not in _KIND_KEYS:
        raise ExportError(f"{where}: {path}.kind must be 'dense', 'conv' or 'sumpool', "
                          f"not {kind!r}")
    return _Fields(where, raw, path, _KIND_KEYS[kind],
                   f"a schema_version {version} {kind} layer"), kind


def _scale(f: _Fields) -> float | None:
    scale = f.get("scale", optional=True)
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not math.isfinite(scale)):
        f.fail("scale", f"must be a finite number or null, not {scale!r}")
    return None if scale is None else float(scale)


def _neuron_fields(f: _Fields, version: int) -> dict[str, Any]:
    """The neuron fields every neuron layer (dense, conv) has, type-checked. ``compare`` and
    ``reset`` are fields from schema_version 2 on; version 1 means the defaults."""
    w_bits = f.integer("w_bits")
    if not 2 <= w_bits <= 8:
        f.fail("w_bits", f"must lie in 2..8, got {w_bits}")
    fields = {"w_bits": w_bits, "v_bits": f.integer("v_bits"), "bias": f.integers("bias"),
              "theta": f.integers("theta"), "leak_shift": f.integer("leak_shift"),
              "v_init": f.integer("v_init"), "fire_mode": f.string("fire_mode"),
              "fires": f.boolean("fires")}
    if version >= 2:  # optional: absent means the default
        for key, default in (("compare", Compare.GE.value), ("reset", Reset.SUBTRACT.value)):
            fields[key] = f.string(key) if key in f.obj else default
    return fields


def _load_rom(folder: Path, f: _Fields, k: int, name: str, hashes: Mapping[str, str],
              shape: tuple[int, int], depth_rule: str, lanes: int, w_bits: int, unpack):
    """The verified ROM of ``layers[k]``: ``(weight, width, depth, rom_files, words)``.

    ``shape`` is the ``(width, depth)`` the layout gives (``depth_rule`` says how, for the
    message); ``unpack(words)`` turns the words into the weight tensor (RomLayoutError on bad
    words).
    """
    where = f.where
    rom = _Fields(where, f.get("rom"), f"layers[{k}].rom", _ROM_KEYS)
    width, depth = rom.integer("width", 1), rom.integer("depth", 1)
    expect_width, expect_depth = shape
    if width != expect_width:
        rom.fail("width", f"= {width} but lanes * w_bits = {lanes} * {w_bits} = {expect_width}")
    if depth != expect_depth:
        rom.fail("depth", f"= {depth} but {depth_rule} = {expect_depth}")
    rom_files = {kind: rom.file_name(kind) for kind in _ROM_FORMATS}
    texts = {}
    for kind, file_name in rom_files.items():
        if file_name not in hashes:
            rom.fail(kind, f"= {file_name!r} has no entry in files (no SHA-256 to check)")
        texts[kind] = _read_text(folder, file_name)
    hex_path = folder / rom_files["hex"]
    try:
        words = parse_hex(texts["hex"], width, depth)
        weight = unpack(words)
    except RomLayoutError as error:
        raise ExportError(f"{hex_path}: {error}") from None
    title = f"layer{k} ({json.dumps(name)}), lanes={lanes}, w_bits={w_bits}"
    for kind, writer in (("coe", format_coe), ("mif", format_mif)):
        expected = writer(words, width, title)
        if texts[kind] != expected:
            raise ExportError(_first_difference(str(folder / rom_files[kind]), texts[kind],
                                                expected))
    return weight, width, depth, rom_files, tuple(words)


def _check_shapes(f: _Fields, layer, fan_in: int, fan_out: int, output_shape) -> None:
    """The redundant size fields of a shaped layer agree with what golden derives."""
    if tuple(layer.output_shape) != tuple(output_shape):
        f.fail("output_shape", f"= {list(output_shape)} but input_shape, kernel, stride and "
               f"padding give {list(layer.output_shape)}")
    if fan_in != layer.fan_in:
        f.fail("fan_in", f"= {fan_in} but input_shape {list(layer.input_shape)} holds "
               f"{layer.fan_in} values (C * H * W)")
    if fan_out != layer.fan_out:
        f.fail("fan_out", f"= {fan_out} but output_shape {list(output_shape)} holds "
               f"{layer.fan_out} values (C * H * W)")


def _load_layer(folder: Path, raw, k: int, lanes: int, hashes: Mapping[str, str],
                version: int = 1):
    """``(golden layer, LayerManifest)`` of ``layers[k]``, fully verified."""
    where = str(folder / MANIFEST_NAME)
    f, kind = _layer_fields(where, raw, k, version)
    name = f.string("name")
    fan_in, fan_out = f.integer("fan_in", 1), f.integer("fan_out", 1)
    shapes: dict[str, Any] = {}
    if kind != "dense":
        shapes = {"input_shape": f.shape("input_shape", 3, 1),
                  "output_shape": f.shape("output_shape", 3, 1),
                  "kernel": f.shape("kernel", 2, 1), "stride": f.shape("stride", 2, 1),
                  "padding": f.shape("padding", 2, 0)}
    if kind == "sumpool":
        scale = _scale(f)
        try:
            pool = SumPoolLayer(kernel=shapes["kernel"], input_shape=shapes["input_shape"],
                                stride=shapes["stride"], padding=shapes["padding"],
                                name=f"layers[{k}]")
        except ContractError as error:
            raise ExportError(f"{where}: {error}") from None
        _check_shapes(f, pool, fan_in, fan_out, shapes["output_shape"])
        return pool, LayerManifest(
            name=name, fan_in=fan_in, fan_out=fan_out, w_bits=None, v_bits=None, bias=(),
            theta=(), leak_shift=None, fire_mode=None, v_init=None, fires=None, scale=scale,
            rom_width=0, rom_depth=0, rom_files={}, words=(), kind=kind, **shapes)
    neuron = _neuron_fields(f, version)
    scale = _scale(f)
    w_bits, bias = neuron["w_bits"], neuron["bias"]
    if kind == "conv":
        in_channels, out_channels = f.integer("in_channels", 1), f.integer("out_channels", 1)
        input_shape, output_shape = shapes["input_shape"], shapes["output_shape"]
        if in_channels != input_shape[0]:
            f.fail("in_channels", f"= {in_channels} but input_shape {list(input_shape)} has "
                   f"{input_shape[0]} channels")
        if out_channels != output_shape[0]:
            f.fail("out_channels", f"= {out_channels} but output_shape {list(output_shape)} has "
                   f"{output_shape[0]} channels")
        if len(bias) != out_channels:
            f.fail("bias", f"has {len(bias)} entries but out_channels = {out_channels} (one "
                   "bias per output channel)")
        kernel = shapes["kernel"]
        weight, width, depth, rom_files, words = _load_rom(
            folder, f, k, name, hashes,
            conv_rom_shape(in_channels, out_channels, kernel, lanes, w_bits),
            "in_channels * kh * kw * ceil(out_channels / lanes)", lanes, w_bits,
            lambda words: unpack_conv_weights(words, in_channels, out_channels, kernel, lanes,
                                              w_bits))
    else:
        if len(bias) != fan_out:
            f.fail("bias", f"has {len(bias)} entries but fan_out = {fan_out}")
        weight, width, depth, rom_files, words = _load_rom(
            folder, f, k, name, hashes, rom_shape(fan_in, fan_out, lanes, w_bits),
            "fan_in * ceil(fan_out / lanes)", lanes, w_bits,
            lambda words: unpack_weights(words, fan_in, fan_out, lanes, w_bits))
    try:  # golden's own checks, named by the manifest path of the layer
        if kind == "conv":
            layer = ConvLayer(weight=weight, input_shape=shapes["input_shape"],
                              stride=shapes["stride"], padding=shapes["padding"],
                              name=f"layers[{k}]", **neuron)
        else:
            layer = DenseLayer(weight=weight, name=f"layers[{k}]", **neuron)
    except ContractError as error:
        raise ExportError(f"{where}: {error}") from None
    if kind == "conv":
        _check_shapes(f, layer, fan_in, fan_out, shapes["output_shape"])
    return layer, LayerManifest(
        name=name, fan_in=fan_in, fan_out=fan_out, bias=tuple(bias),
        theta=tuple(neuron["theta"]), leak_shift=neuron["leak_shift"],
        fire_mode=neuron["fire_mode"], v_init=neuron["v_init"], fires=neuron["fires"],
        compare=layer.compare.value, reset=layer.reset.value, w_bits=w_bits,
        v_bits=neuron["v_bits"], scale=scale, rom_width=width, rom_depth=depth,
        rom_files=rom_files, words=words, kind=kind, **shapes)


def load_manifest(folder) -> Manifest:
    """Read and verify an export folder.

    Checks, in order: the manifest parses and its ``schema_version`` is one this spikeforge
    reads; every file listed under ``files`` exists and has its SHA-256; every field has its
    type and range; ROM widths and depths follow the layout; the hex words fit their width and
    padding lanes hold 0; the ``.coe`` and ``.mif`` hold the hex file's words; shapes chain from
    layer to layer; the golden model accepts every layer. Raises :class:`ExportError` naming the
    file and field of the first problem. Reads schema versions 1 (dense layers) and 2 (dense,
    convolution and sum-pooling layers); a version 1 manifest with a version 2 field (``kind``,
    ``kernel``, ...) is refused naming that field.
    """
    folder = Path(folder)
    where = str(folder / MANIFEST_NAME)
    if not folder.is_dir():
        raise ExportError(f"{folder}: export folder is missing")
    text = _read_text(folder, MANIFEST_NAME)
    try:
        raw = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise ExportError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise ExportError(f"{where}: must hold a JSON object")
    version = raw.get("schema_version")
    if not _is_int(version):
        raise ExportError(f"{where}: schema_version must be an integer, not {version!r}")
    if version > SCHEMA_VERSION:
        raise ExportError(f"{where}: schema_version {version} is newer than this spikeforge "
                          f"({__version__}) reads (up to {SCHEMA_VERSION}); upgrade spikeforge")
    if version not in SCHEMA_VERSIONS:
        raise ExportError(f"{where}: schema_version {version} is unknown (this spikeforge "
                          f"reads {', '.join(map(str, SCHEMA_VERSIONS))})")
    what = f"schema_version {version}"
    top = _Fields(where, raw, "", _TOP_KEYS, what)
    spikeforge_version = top.string("spikeforge_version")
    hashes = top.get("files")
    if not isinstance(hashes, dict):
        top.fail("files", "must be an object mapping file names to SHA-256 digests")
    for name, digest in sorted(hashes.items()):
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            top.fail(f"files[{name!r}]", f"= {digest!r} is not a SHA-256 hex digest")
        if name == MANIFEST_NAME or "/" in name or "\\" in name or name in ("", ".", ".."):
            top.fail(f"files[{name!r}]", "must name a plain file inside the export folder")
        actual = hashlib.sha256(_read_text(folder, name).encode("ascii")).hexdigest()
        if actual != digest:
            raise ExportError(f"{folder / name}: SHA-256 is {actual} but manifest "
                              f"files[{name!r}] says {digest}; the file was changed")
    threshold = top.string("threshold_compare")
    if threshold != THRESHOLD_COMPARE:
        top.fail("threshold_compare", f"= {threshold!r}; spikeforge fires on V >= theta "
                 f"({THRESHOLD_COMPARE!r}) only")
    timesteps = top.integer("timesteps", 1)
    lanes = top.integer("lanes", 1)
    encoder_fields = _Fields(where, top.get("encoder"), "encoder", {"kind", "pixel_bits"},
                             what)
    try:
        encoder = Encoder(kind=encoder_fields.string("kind"),
                          pixel_bits=encoder_fields.integer("pixel_bits"))
    except ContractError as error:
        raise ExportError(f"{where}: {error}") from None
    metadata = top.get("metadata")
    if not isinstance(metadata, dict):
        top.fail("metadata", f"must be a JSON object, not {metadata!r}")
    raw_layers = top.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        top.fail("layers", "must be a non-empty list")
    layers, checked_layers = [], []
    for k, raw_layer in enumerate(raw_layers):
        checked, layer = _load_layer(folder, raw_layer, k, lanes, hashes, version)
        if layer.kind != "sumpool" and len(layer.theta) != timesteps:
            raise ExportError(f"{where}: layers[{k}].theta has {len(layer.theta)} entries but "
                              f"timesteps = {timesteps}")
        if k > 0 and layer.fan_in != layers[-1].fan_out:
            raise ExportError(f"{where}: layers[{k}].fan_in = {layer.fan_in} but "
                              f"layers[{k - 1}].fan_out = {layers[-1].fan_out}")
        layers.append(layer)
        checked_layers.append(checked)
    try:
        Network(checked_layers, timesteps, encoder)
    except ContractError as error:
        raise ExportError(f"{where}: {error}") from None
    renamed = [layer.with_(name=entry.name)
               for layer, entry in zip(checked_layers, layers, strict=True)]
    network = Network(renamed, timesteps, encoder)
    return Manifest(folder=folder, schema_version=version, spikeforge_version=spikeforge_version,
                    timesteps=timesteps, encoder=encoder, lanes=lanes, layers=tuple(layers),
                    files=dict(hashes), metadata=metadata, network=network)


def load_network(folder) -> Network:
    """The golden network held by an export folder (fully verified, see :func:`load_manifest`)."""
    return load_manifest(folder).network


# -- what the hardware runs ------------------------------------------------------------------


def hardware_support(network: Network) -> list[str]:
    """Why ``network`` cannot run on the current hardware; empty when it can.

    The accelerator (:class:`spikeforge.hw.accelerator.NetworkAccelerator`) runs dense and
    convolution layers of power-of-two stride, with square power-of-two sum pooling between
    them and a dense last layer (``spikeforge.hw.core_layout``), fed by any encoder (``rate``,
    ``radix``, or ``direct`` without pooling before the first neuron layer), at most
    ``SPEC.max_layers`` layers (``spikeforge.sw.interface``) of at most ``2**ADDR_BITS``
    neurons (its spike address). Each entry is one short clause (no newline), such as
    ``"layers[1] (pool1): the core array pools with square, non-overlapping, unpadded
    power-of-two windows, ..."``.
    The golden model runs every valid network, whatever this says (``spikeforge eval``).
    """
    from spikeforge.hw.accelerator import ADDR_BITS
    from spikeforge.hw.core_layout import CoreLayoutError, core_layout
    from spikeforge.sw.interface import SPEC

    reasons = []
    try:
        core_layout(network, 1)
    except CoreLayoutError as error:
        reasons.append(str(error))
    if len(network.layers) > SPEC.max_layers:
        reasons.append(f"{len(network.layers)} layers exceed the register map's "
                       f"{SPEC.max_layers}")
    widest = max([network.n_inputs] + [layer.fan_out for layer in network.layers])
    if widest > 1 << ADDR_BITS:
        reasons.append(f"a layer of {widest} values exceeds the {ADDR_BITS}-bit spike address")
    return reasons


def require_hardware_support(network: Network, what: str = "the network") -> None:
    """Raise :class:`UnsupportedNetworkError` (an :class:`ExportError`, one line) when
    :func:`hardware_support` finds a reason; ``what`` names the export in the message."""
    reasons = hardware_support(network)
    if reasons:
        raise UnsupportedNetworkError(
            f"{what} cannot run on the current hardware: {'; '.join(reasons)} (the golden model "
            "runs it: `spikeforge eval`)")


# -- what `spikeforge export` exports from --------------------------------------------------------


def load_source(source) -> tuple[Network, dict, list | None]:
    """``(network, metadata, scales)`` to pass to :func:`export_network`, from one of

    * an export folder (it holds ``manifest.json``): loaded and verified, its metadata and
      scales kept, so it can be re-packed for another lane count;
    * otherwise a training checkpoint, turned into the integer network by
      :func:`spikeforge.sw.train.integer_network` (metadata names the checkpoint file).

    The manifest is the only serialisation of a network: there is no second (JSON) form.
    Every refusal (a folder without a manifest, a missing checkpoint, the training stack
    unavailable) is an :class:`ExportError` naming the file.
    """
    source = Path(source)
    if source.is_dir():
        if not (source / MANIFEST_NAME).exists():
            raise ExportError(f"{source} is a folder without {MANIFEST_NAME}")
        manifest = load_manifest(source)
        return manifest.network, dict(manifest.metadata), manifest.scales
    if not source.exists():
        raise ExportError(f"{source}: checkpoint is missing")
    # Only a checkpoint needs the training stack (PyTorch's nn, the data sets): it is imported
    # here so that loading an export never pulls it in, and so that its
    # absence is a refusal with a message rather than an import error of this module.
    try:
        from spikeforge.sw.train import integer_network
    except ImportError as error:
        raise ExportError(f"exporting a checkpoint needs spikeforge.sw.train.integer_network, "
                          f"which is not available ({error}); pass an export folder") from None
    try:
        network = integer_network(source)
    except ValueError as error:  # CheckpointError, ConfigError, QuantizationError: one line
        raise ExportError(str(error)) from None
    # the whole path: a file name alone does not say which of several runs it was
    return network, {"source": "checkpoint", "checkpoint": str(source.resolve())}, None
