"""The command line wires every step of the flow, and is the only place that parses arguments."""

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spikeforge.cli import COMMANDS, main


def test_every_subcommand_has_help():
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0


def test_unknown_subcommand_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bitstream"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'bitstream'" in capsys.readouterr().err


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "spikeforge.cli", "--version"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.startswith("spikeforge ")


def test_help_lists_the_subcommands_in_flow_order(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = re.findall(r"^    ([\w-]+)  +\S", capsys.readouterr().out, re.MULTILINE)
    assert listed == list(COMMANDS) == ["demo", "train", "export", "from-nir", "to-nir", "eval",
                                        "rtl", "sim", "synth", "run"]


# --- argument parsing lives in spikeforge/cli, and only there ----------------------------------

#: The packages whose modules are checked; ``spikeforge.cli`` is the command-line package.
PACKAGES = ("spikeforge", "spikeforge.hw", "spikeforge.sw", "spikeforge.sim",
            "spikeforge.constraints")
CLI_PACKAGE = "spikeforge.cli"
#: The public names of a subcommand module.
CLI_NAMES = ("add_arguments", "run")
#: ``python -m`` entry points kept outside spikeforge/cli on purpose, with the reason.
ENTRY_POINTS = {
    "spikeforge.hw.rtl": "`python -m spikeforge.hw.rtl` dumps one LayerEngine's Verilog from "
                         "flags, with no export folder: a gateware developer's tool, not a step "
                         "of the flow, which needs nothing above the gateware layer",
    "spikeforge.sw.interface": "`python -m spikeforge.sw.interface --update docs` renders the "
                               "register tables of docs/ from the spec: a maintainer's tool "
                               "beside the contract it renders, which stays stdlib-only",
}


def _package_modules() -> dict[str, Path]:
    """``{module name: source file}`` of every module of the installed packages."""
    modules = {}
    for package in PACKAGES:
        root = Path(importlib.import_module(package).__file__).parent
        for path in sorted(root.rglob("*.py")):
            parts = [*path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def _imports_argparse(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "argparse" for alias in node.names)
    return isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "argparse"


def parsing_findings(path: Path, *, cli: bool) -> list[str]:
    """What in the module at ``path`` breaks the rule "argument parsing lives in spikeforge/cli,
    and a command module holds nothing else"; empty if it keeps it.

    ``cli`` modules (one per subcommand) must define ``add_arguments`` and ``run`` and no other
    public function, no class (a library type) and no ``__main__`` block, and export only those
    two names; any other module must neither import argparse nor define ``add_arguments``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = path.name
    findings = []
    if not cli:
        for node in ast.walk(tree):
            if _imports_argparse(node):
                findings.append(f"{name}:{node.lineno}: imports argparse outside spikeforge/cli")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and node.name == "add_arguments":
                findings.append(f"{name}:{node.lineno}: defines add_arguments outside "
                                "spikeforge/cli")
        return findings
    defined = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined[node.name] = node
        if isinstance(node, ast.ClassDef):
            findings.append(f"{name}:{node.lineno}: defines class {node.name}: library types "
                            "belong in the application layer")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and node.name not in CLI_NAMES and not node.name.startswith("_"):
            findings.append(f"{name}:{node.lineno}: defines {node.name}(): library work "
                            "belongs in the application layer (or make it a private helper)")
        elif isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            findings.append(f"{name}:{node.lineno}: has a __main__ block (use python -m "
                            "spikeforge.cli)")
        elif isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "__all__"
                for target in node.targets):
            exported = ast.literal_eval(node.value)
            if sorted(exported) != sorted(CLI_NAMES):
                findings.append(f"{name}:{node.lineno}: exports {exported}, not only "
                                f"{list(CLI_NAMES)}")
    for wanted in CLI_NAMES:
        if not isinstance(defined.get(wanted), ast.FunctionDef):
            findings.append(f"{name}: has no {wanted}() function")
    return findings


def test_every_subcommand_module_only_parses_arguments():
    modules = _package_modules()
    for command, (module, _help) in COMMANDS.items():
        assert module == f"{CLI_PACKAGE}.{command.replace('-', '_')}", \
            f"{command} lives outside spikeforge/cli"
        assert parsing_findings(modules[module], cli=True) == []
    # every module of the package is a subcommand, the package's wiring or `python -m`
    in_cli = {name for name in modules if name.startswith(CLI_PACKAGE + ".")}
    assert in_cli == {module for module, _ in COMMANDS.values()} | {CLI_PACKAGE + ".__main__"}


def test_no_module_outside_the_cli_parses_arguments():
    findings = []
    for module, path in _package_modules().items():
        if module == CLI_PACKAGE or module.startswith(CLI_PACKAGE + "."):
            continue
        found = parsing_findings(path, cli=False)
        if module in ENTRY_POINTS:
            assert found, f"{module} is exempt as an entry point but parses no arguments"
            continue
        findings += found
    assert findings == []


def test_the_rule_catches_argument_parsing_in_the_wrong_place(tmp_path):
    library = tmp_path / "library.py"
    library.write_text("import argparse\n\n\ndef add_arguments(parser):\n    pass\n")
    assert parsing_findings(library, cli=False) == [
        "library.py:1: imports argparse outside spikeforge/cli",
        "library.py:4: defines add_arguments outside spikeforge/cli"]
    hidden = tmp_path / "hidden.py"
    hidden.write_text("def main():\n    from argparse import ArgumentParser\n")
    assert parsing_findings(hidden, cli=False) == [
        "hidden.py:2: imports argparse outside spikeforge/cli"]
    command = tmp_path / "command.py"
    command.write_text(
        "__all__ = ['add_arguments', 'run', 'simulate_export']\n\n\n"
        "class SimSummary:\n    pass\n\n\n"
        "def add_arguments(parser):\n    pass\n\n\n"
        "def simulate_export(folder):\n    pass\n\n\n"
        "def _table(summary):\n    pass\n\n\n"
        "if __name__ == '__main__':\n    pass\n")
    assert parsing_findings(command, cli=True) == [
        "command.py:1: exports ['add_arguments', 'run', 'simulate_export'], not only "
        "['add_arguments', 'run']",
        "command.py:4: defines class SimSummary: library types belong in the application layer",
        "command.py:12: defines simulate_export(): library work belongs in the application "
        "layer (or make it a private helper)",
        "command.py:20: has a __main__ block (use python -m spikeforge.cli)",
        "command.py: has no run() function"]


def test_demo_out_under_an_existing_file_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert main(["demo", "--out", str(tmp_path / "afile" / "demo"), "--no-sim"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikeforge demo: error: ") and "afile" in err
    assert len(err.splitlines()) == 1
