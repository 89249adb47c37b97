"""Export a golden :class:`~sw.golden.Network` to a folder the gateware is built from, and back.

One export folder holds ``manifest.json`` and, per layer ``k``, the weight ROM in three forms
that carry the same words (``docs/rom-layout.md``): ``layerK.hex`` (``$readmemh``), ``layerK.coe``
(Xilinx) and ``layerK.mif`` (Intel). Everything else a layer needs (bias, thresholds, leak shift,
``v_init``) is a register reset value in the hardware and lives in the manifest. The format is
specified in ``docs/export-format.md``.

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

from hw.rom import RomLayoutError, format_hex, pack_weights, parse_hex, rom_shape, unpack_weights
from sw import __version__
from sw.golden import ContractError, DenseLayer, Encoder, Network

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "ExportError",
    "LayerManifest",
    "Manifest",
    "export_network",
    "format_coe",
    "format_mif",
    "load_manifest",
    "load_network",
    "network_from_json",
    "network_to_json",
]

#: Version of the folder format this module writes. Loading refuses any other (a newer one with
#: an "upgrade spikeforge" message).
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
#: The threshold comparison every exported network uses (``V >= theta``, DESIGN section 1).
THRESHOLD_COMPARE = ">="

_ROM_FORMATS = ("hex", "coe", "mif")
_EXPORT_FILE = re.compile(r"^(manifest\.json|layer[0-9]+\.(hex|coe|mif))$")
_TOP_KEYS = {"schema_version", "spikeforge_version", "timesteps", "encoder", "lanes",
             "threshold_compare", "layers", "files", "metadata"}
_LAYER_KEYS = {"name", "fan_in", "fan_out", "w_bits", "v_bits", "bias", "theta", "leak_shift",
               "fire_mode", "v_init", "fires", "scale", "rom"}
_ROM_KEYS = {"width", "depth", *_ROM_FORMATS}


class ExportError(ValueError):
    """An export folder (or a network to export) is inconsistent. The message names the file
    and, inside ``manifest.json``, the field (``layers[1].theta[0]``)."""


@dataclass(frozen=True)
class LayerManifest:
    """One verified ``layers[k]`` entry of a manifest, with its ROM words."""

    name: str
    fan_in: int
    fan_out: int
    w_bits: int
    v_bits: int
    bias: tuple[int, ...]
    theta: tuple[int, ...]
    leak_shift: int
    fire_mode: str
    v_init: int
    fires: bool
    scale: float | None
    rom_width: int
    rom_depth: int
    rom_files: Mapping[str, str]  # "hex" / "coe" / "mif" -> file name in the folder
    words: tuple[int, ...]  # the ROM contents, word 0 first (the gateware's Memory init)


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


def _build(network: Network, lanes: int, metadata: Mapping | None,
           scales) -> dict[str, str]:
    """Every file of the export folder, name -> text."""
    if not isinstance(network, Network):
        raise ExportError(f"network must be a sw.golden.Network, not {type(network).__name__}")
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        raise ExportError(f"lanes must be an integer >= 1, not {lanes!r}")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise ExportError(f"metadata must be a dict, not {type(metadata).__name__}")
    scales = _check_scales(scales, network)
    files: dict[str, str] = {}
    layers = []
    for k, layer in enumerate(network.layers):
        width, depth = rom_shape(layer.fan_in, layer.fan_out, lanes, layer.w_bits)
        words = pack_weights(layer.weight, lanes, layer.w_bits)
        title = f"layer{k} ({json.dumps(layer.name)}), lanes={lanes}, w_bits={layer.w_bits}"
        names = {kind: f"layer{k}.{kind}" for kind in _ROM_FORMATS}
        files[names["hex"]] = format_hex(words, width)
        files[names["coe"]] = format_coe(words, width, title)
        files[names["mif"]] = format_mif(words, width, title)
        layers.append({
            "name": layer.name,
            "fan_in": layer.fan_in,
            "fan_out": layer.fan_out,
            "w_bits": layer.w_bits,
            "v_bits": layer.v_bits,
            "bias": layer.bias.tolist(),
            "theta": layer.theta.tolist(),
            "leak_shift": layer.leak_shift,
            "fire_mode": layer.fire_mode.value,
            "v_init": layer.v_init,
            "fires": layer.fires,
            "scale": scales[k],
            "rom": {"width": width, "depth": depth, **names},
        })
    manifest = {
        "schema_version": SCHEMA_VERSION,
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

    def __init__(self, where: str, obj, path: str, allowed: set[str]):
        if not isinstance(obj, dict):
            raise ExportError(f"{where}: {path or 'the manifest'} must be a JSON object")
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise ExportError(f"{where}: {self._name(path, unknown[0])} is not a field of "
                              f"schema_version {SCHEMA_VERSION}")
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


def _load_layer(folder: Path, raw, k: int, lanes: int,
                hashes: Mapping[str, str]) -> tuple[DenseLayer, LayerManifest]:
    where = str(folder / MANIFEST_NAME)
    f = _Fields(where, raw, f"layers[{k}]", _LAYER_KEYS)
    name = f.string("name")
    fan_in, fan_out = f.integer("fan_in", 1), f.integer("fan_out", 1)
    w_bits = f.integer("w_bits")
    if not 2 <= w_bits <= 8:
        f.fail("w_bits", f"must lie in 2..8, got {w_bits}")
    v_bits = f.integer("v_bits")
    bias, theta = f.integers("bias"), f.integers("theta")
    leak_shift, v_init = f.integer("leak_shift"), f.integer("v_init")
    fire_mode, fires = f.string("fire_mode"), f.boolean("fires")
    scale = f.get("scale", optional=True)
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not math.isfinite(scale)):
        f.fail("scale", f"must be a finite number or null, not {scale!r}")
    if len(bias) != fan_out:
        f.fail("bias", f"has {len(bias)} entries but fan_out = {fan_out}")
    rom = _Fields(where, f.get("rom"), f"layers[{k}].rom", _ROM_KEYS)
    width, depth = rom.integer("width", 1), rom.integer("depth", 1)
    expect_width, expect_depth = rom_shape(fan_in, fan_out, lanes, w_bits)
    if width != expect_width:
        rom.fail("width", f"= {width} but lanes * w_bits = {lanes} * {w_bits} = {expect_width}")
    if depth != expect_depth:
        rom.fail("depth", f"= {depth} but fan_in * ceil(fan_out / lanes) = {expect_depth}")
    rom_files = {kind: rom.file_name(kind) for kind in _ROM_FORMATS}
    texts = {}
    for kind, file_name in rom_files.items():
        if file_name not in hashes:
            rom.fail(kind, f"= {file_name!r} has no entry in files (no SHA-256 to check)")
        texts[kind] = _read_text(folder, file_name)
    hex_path = folder / rom_files["hex"]
    try:
        words = parse_hex(texts["hex"], width, depth)
        weight = unpack_weights(words, fan_in, fan_out, lanes, w_bits)
    except RomLayoutError as error:
        raise ExportError(f"{hex_path}: {error}") from None
    title = f"layer{k} ({json.dumps(name)}), lanes={lanes}, w_bits={w_bits}"
    for kind, writer in (("coe", format_coe), ("mif", format_mif)):
        expected = writer(words, width, title)
        if texts[kind] != expected:
            raise ExportError(_first_difference(str(folder / rom_files[kind]), texts[kind],
                                                expected))
    try:  # golden's own checks, named by the manifest path of the layer
        dense = DenseLayer(weight=weight, bias=bias, theta=theta, leak_shift=leak_shift,
                   fire_mode=fire_mode, v_init=v_init, fires=fires, w_bits=w_bits,
                   v_bits=v_bits, name=f"layers[{k}]")
    except ContractError as error:
        raise ExportError(f"{where}: {error}") from None
    return dense, LayerManifest(name=name, fan_in=fan_in, fan_out=fan_out, w_bits=w_bits,
                                v_bits=v_bits,
                         bias=tuple(bias), theta=tuple(theta), leak_shift=leak_shift,
                         fire_mode=fire_mode, v_init=v_init, fires=fires,
                         scale=None if scale is None else float(scale), rom_width=width,
                         rom_depth=depth, rom_files=rom_files, words=tuple(words))


def load_manifest(folder) -> Manifest:
    """Read and verify an export folder.

    Checks, in order: the manifest parses and its ``schema_version`` is one this spikeforge
    reads; every file listed under ``files`` exists and has its SHA-256; every field has its
    type and range; ROM widths and depths follow the layout; the hex words fit their width and
    padding lanes hold 0; the ``.coe`` and ``.mif`` hold the hex file's words; shapes chain from
    layer to layer; the golden model accepts every layer. Raises :class:`ExportError` naming the
    file and field of the first problem.
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
    if version != SCHEMA_VERSION:
        raise ExportError(f"{where}: schema_version {version} is unknown (this spikeforge "
                          f"reads {SCHEMA_VERSION})")
    top = _Fields(where, raw, "", _TOP_KEYS)
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
    encoder_fields = _Fields(where, top.get("encoder"), "encoder", {"kind", "pixel_bits"})
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
    layers, dense = [], []
    for k, raw_layer in enumerate(raw_layers):
        checked, layer = _load_layer(folder, raw_layer, k, lanes, hashes)
        if len(layer.theta) != timesteps:
            raise ExportError(f"{where}: layers[{k}].theta has {len(layer.theta)} entries but "
                              f"timesteps = {timesteps}")
        if k > 0 and layer.fan_in != layers[-1].fan_out:
            raise ExportError(f"{where}: layers[{k}].fan_in = {layer.fan_in} but "
                              f"layers[{k - 1}].fan_out = {layers[-1].fan_out}")
        layers.append(layer)
        dense.append(checked)
    try:
        Network(dense, timesteps, encoder)
    except ContractError as error:
        raise ExportError(f"{where}: {error}") from None
    renamed = [layer.with_(name=entry.name) for layer, entry in zip(dense, layers, strict=True)]
    network = Network(renamed, timesteps, encoder)
    return Manifest(folder=folder, schema_version=version, spikeforge_version=spikeforge_version,
                    timesteps=timesteps, encoder=encoder, lanes=lanes, layers=tuple(layers),
                    files=dict(hashes), metadata=metadata, network=network)


def load_network(folder) -> Network:
    """The golden network held by an export folder (fully verified, see :func:`load_manifest`)."""
    return load_manifest(folder).network


# -- a plain JSON form of a network (for tests and the command line) ---------------------------


def network_to_json(network: Network) -> dict:
    """A JSON-able dict of every field of ``network`` (weights as nested lists)."""
    return {
        "timesteps": network.timesteps,
        "encoder": {"kind": network.encoder.kind.value, "pixel_bits": network.encoder.pixel_bits},
        "layers": [{
            "name": layer.name, "weight": layer.weight.tolist(), "bias": layer.bias.tolist(),
            "theta": layer.theta.tolist(), "leak_shift": layer.leak_shift,
            "fire_mode": layer.fire_mode.value, "v_init": layer.v_init, "fires": layer.fires,
            "w_bits": layer.w_bits, "v_bits": layer.v_bits,
        } for layer in network.layers],
    }


def network_from_json(data: Mapping) -> Network:
    """Inverse of :func:`network_to_json`; golden's checks apply, failures as ExportError."""
    keys = {"name", "weight", "bias", "theta", "leak_shift", "fire_mode", "v_init", "fires",
            "w_bits", "v_bits"}
    try:
        if not isinstance(data, Mapping) or not isinstance(data.get("layers"), list):
            raise ExportError("network JSON must be an object with a list of layers")
        layers = []
        for k, layer in enumerate(data["layers"]):
            if not isinstance(layer, Mapping):
                raise ExportError(f"layers[{k}] must be an object")
            unknown = sorted(set(layer) - keys)
            if unknown:
                raise ExportError(f"layers[{k}].{unknown[0]} is not a layer field")
            layers.append(DenseLayer(**layer))
        encoder = data.get("encoder", {})
        if not isinstance(encoder, Mapping) or set(encoder) - {"kind", "pixel_bits"}:
            raise ExportError("encoder must be an object with kind and pixel_bits")
        return Network(layers, data.get("timesteps"), Encoder(**encoder))
    except (ContractError, TypeError) as error:
        raise ExportError(f"network JSON: {error}") from None
