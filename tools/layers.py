"""The import-direction check of ``make lint``: every spikeforge import points down the layers.

The layers and which modules belong to them are data, in ``pyproject.toml`` under
``[tool.spikeforge.layers]`` (bottom first); the folders each package comes from are the
``[tool.setuptools.package-dir]`` table. This script reads both, parses every module of the
package (no import of the code itself, so a broken module cannot hide an edge) and reports each
import of a module in a higher layer, wherever it sits: at module level, inside a function, or
behind ``if TYPE_CHECKING``. ::

    python tools/layers.py            # exit 0, or one line per upward import and exit 1

Why not import-linter: its graph builder (grimp) finds a package's modules under the package's
own folder, and ``spikeforge.hw``/``sw``/``sim`` come from sibling folders through
``package-dir``; in an editable install it reports ``spikeforge.sim does not exist``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Violation:
    path: Path
    line: int
    importer: str
    imported: str
    importer_layer: str
    imported_layer: str

    def __str__(self) -> str:
        return (f"{self.path}:{self.line}: {self.importer} ({self.importer_layer}) imports "
                f"{self.imported} ({self.imported_layer}), a higher layer")


class Layers:
    """Module name -> layer, by the longest prefix listed in the layer table."""

    def __init__(self, table: dict[str, list[str]]):
        if not table:
            raise ValueError("the layer table [tool.spikeforge.layers] is empty")
        self.names = list(table)  # bottom first
        self._owner: dict[str, int] = {}
        for rank, prefixes in enumerate(table.values()):
            for prefix in prefixes:
                if prefix in self._owner:
                    raise ValueError(f"{prefix} is listed in two layers")
                self._owner[prefix] = rank

    def rank(self, module: str) -> int | None:
        parts = module.split(".")
        for end in range(len(parts), 0, -1):
            rank = self._owner.get(".".join(parts[:end]))
            if rank is not None:
                return rank
        return None


def modules(package_dirs: dict[str, Path]) -> Iterator[tuple[str, Path]]:
    """Every ``(module name, file)`` of the packages, with subpackages mapped by ``package-dir``."""
    for package, folder in package_dirs.items():
        for path in sorted(folder.glob("*.py")):
            if path.name == "__init__.py":
                yield package, path
            else:
                yield f"{package}.{path.stem}", path


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[:len(base) - node.level + 1]
                target = ".".join(parent + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                # `from spikeforge.sw import export` imports the module spikeforge.sw.export
                yield node.lineno, f"{target}.{alias.name}" if alias.name != "*" else target


def check(package_dirs: dict[str, Path], layers: Layers, root: Path = ROOT) -> list[Violation]:
    """Every upward import in the given packages (``{"spikeforge.hw": Path("hw"), ...}``)."""
    known = {name for name, _ in modules(package_dirs)}
    out = []
    for module, path in modules(package_dirs):
        mine = layers.rank(module)
        if mine is None:
            raise ValueError(f"{module} belongs to no layer of [tool.spikeforge.layers]")
        tree = ast.parse(path.read_text(), filename=str(path))
        seen = set()
        for line, name in _imports(tree, module, path.name == "__init__.py"):
            while name not in known and "." in name:  # `from m import function` -> m
                name = name.rsplit(".", 1)[0]
            theirs = layers.rank(name) if name in known else None
            if theirs is not None and theirs > mine and (line, name) not in seen:
                seen.add((line, name))
                out.append(Violation(path.relative_to(root) if path.is_relative_to(root) else path,
                                     line, module, name, layers.names[mine], layers.names[theirs]))
    return out


def load_config(pyproject: Path) -> tuple[dict[str, Path], Layers]:
    config = tomllib.loads(pyproject.read_text())
    folders = config["tool"]["setuptools"]["package-dir"]
    package_dirs = {}
    for package, folder in folders.items():
        package_dirs[package] = pyproject.parent / folder
        # subpackages below a mapped folder (spikeforge.sw.train, spikeforge.cli)
        for sub in sorted((pyproject.parent / folder).rglob("__init__.py")):
            relative = sub.parent.relative_to(pyproject.parent / folder)
            if relative.parts:
                package_dirs[".".join([package, *relative.parts])] = sub.parent
    return package_dirs, Layers(config["tool"]["spikeforge"]["layers"])


def main(argv: list[str] | None = None) -> int:
    pyproject = Path(argv[0]) if argv else ROOT / "pyproject.toml"
    package_dirs, layers = load_config(pyproject)
    violations = check(package_dirs, layers, pyproject.parent)
    for violation in violations:
        print(violation)
    count = len(list(modules(package_dirs)))
    if violations:
        print(f"layers: {len(violations)} upward import(s) in {count} modules "
              f"({' < '.join(layers.names)})")
        return 1
    print(f"layers: {count} modules, every import points down ({' < '.join(layers.names)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
