# Two entry points for a newcomer: `make demo` and `make test`. Both build .venv first.
# CPU torch by default (scripts/install-torch: PyTorch's CPU wheel index, plain pip if that is
# unreachable); a CUDA user overrides it, e.g.
#   make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench-quick clean readme

install: $(STAMP)

$(STAMP): pyproject.toml Makefile scripts/install-torch
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	scripts/install-torch $(BIN)/python $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev,scale]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vae-anomaly demo

# mypy checks model/, service/ and training/ through vae_anomaly's links, under their installed names.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy vae_anomaly
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) models/demo data/demo.csv .pytest_cache

# Detection benchmark (PyOD is an optional extra); data from ../shared/datasets, see docs/BENCHMARKS.md.
bench-quick: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.detection --quick

# Re-run the README's HTTP examples on a fresh demo model and rewrite their outputs (scripts/readme_examples.py).
readme: $(STAMP)
	$(BIN)/python scripts/readme_examples.py
