"""The command line wires every step of the flow."""

import subprocess
import sys

import pytest

from sw.cli import COMMANDS, main


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
    result = subprocess.run([sys.executable, "-m", "sw.cli", "--version"], capture_output=True,
                            text=True, check=True)
    assert result.stdout.startswith("spikeforge ")
