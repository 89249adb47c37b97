"""docs/api.md's example runs as written, and `help(spikeforge)` lists the public API."""

import re
import subprocess
import sys
from pathlib import Path

import spikeforge as sf

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def test_the_documented_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/api.md has one runnable example"
    exec(compile(blocks[0], str(DOC), "exec"), {"__name__": "docs_api_example"})


def test_help_lists_every_public_name():
    text = subprocess.run([sys.executable, "-c", "import spikeforge; help(spikeforge)"],
                          capture_output=True, text=True, env={"PAGER": "cat", "TERM": "dumb"},
                          check=True).stdout
    for name in ("train", "export", "load", "evaluate", "simulate", "synthesize", "from_nir",
                 "to_nir", "Network"):
        assert name in sf.__all__
        assert re.search(rf"\b{name}\b", text), name


def test_every_public_name_resolves_and_is_in_the_docs():
    doc = DOC.read_text()
    for name in sf.__all__:
        assert getattr(sf, name) is not None
        if name != "__version__":
            assert f"sf.{name}" in doc, f"docs/api.md does not mention sf.{name}"
