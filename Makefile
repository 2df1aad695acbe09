# Two commands on a fresh machine: `make demo` and `make test` (both create .venv and install everything).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
COMPILED := $(VENV)/.compiled
# torch and torchvision are pinned as a pair: laion-clap imports torchvision, and PyPI's torchvision fails to
# load beside other torch builds ("operator torchvision::nms does not exist").
TORCH := torch==2.14.1 torchvision==0.29.1
# Without their declared dependencies: laion-clap pins numpy<2; resemblyzer asks for webrtcvad (a source build:
# webrtcvad-wheels ships the same module built) and PyPI's `typing` backport. pyproject.toml declares what they need.
NO_DEPS := laion-clap==1.1.7 resemblyzer==0.1.4

.PHONY: setup demo test test-deps lint bench clean

setup: $(STAMP) $(COMPILED)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH) -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps $(NO_DEPS)
	touch $@

# Bytecode of the package and the rule scripts' helpers, so that no job compiles them from source. Python caches
# it on first import, except where writing bytecode is off (PYTHONDONTWRITEBYTECODE=1, as on the machine the
# README's figures come from and in many container images): there every job of every run compiled audiofeat
# anew, about 0.5 s of a rerun after adding one file to 1,000. Redone whenever a source file changes; a stale
# file is never used (Python checks the source's mtime and size).
$(COMPILED): $(STAMP) $(wildcard audiofeat/*.py audiofeat/*/*.py workflow/scripts/*.py)
	$(BIN)/python -m compileall -q audiofeat workflow/scripts
	touch $@

demo: setup
	$(BIN)/python demo/make_media.py demo/media > /dev/null
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --profile profiles/local --configfile config/demo.yaml --quiet rules
	@echo "Results: results/demo/ (manifests/, dataset/, embeddings.npy, summary.json, report/index.html)"

# Debian packages the tests use where they are missing (root only): real recordings, headless Chromium, and a
# one-node SLURM cluster (slurmctld, slurmd, slurmdbd, munge, MariaDB) for the test of profiles/slurm.
test-deps:
	@bash .ci/install_test_deps.sh

test: setup test-deps
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest tests -q

lint: setup
	$(BIN)/snakemake --lint --configfile config/demo.yaml

bench: setup
	$(BIN)/python benchmarks/bench_features.py

clean:
	rm -rf results .snakemake
