# Two commands on a fresh machine: `make demo` and `make test` (both create .venv and install everything).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch and torchvision are pinned as a pair: laion-clap imports torchvision, and PyPI's torchvision fails to
# load beside other torch builds ("operator torchvision::nms does not exist").
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test test-deps lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH) -e '.[test]'
	touch $@

demo: setup
	$(BIN)/python scripts/make_demo_media.py demo/media > /dev/null
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --profile profiles/local --configfile config/demo.yaml --quiet rules
	@echo "Results: results/demo/ (manifests/, manifest.jsonl, embeddings.npy, summary.json, report/index.html)"

# Debian packages the tests use where they are missing (root only): real recordings, headless Chromium, and a
# one-node SLURM cluster (slurmctld, slurmd, slurmdbd, munge, MariaDB) for the test of profiles/slurm.
test-deps:
	@bash scripts/install_test_deps.sh

test: setup test-deps
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest tests -q

lint: setup
	$(BIN)/snakemake --lint --configfile config/demo.yaml

bench: setup
	$(BIN)/python scripts/bench_features.py

clean:
	rm -rf results .snakemake
