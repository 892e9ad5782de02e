# aelab — the two commands: `make train` (the default job) and `make test`.
# Both create .venv and install aelab into it first when needed.

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.aelab-installed
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
ARGS    ?=
PYTEST_ARGS ?=

.PHONY: help install data train test test-slow test-all lint docs bench clean-outputs

help:
	@echo "make train       set up .venv, get Fashion-MNIST, train the default conv autoencoder (ARGS='model=mlp ...')"
	@echo "make test        the fast test suite"
	@echo "make test-slow   the long checks (real Fashion-MNIST, ablation quick variants)"
	@echo "make lint        ruff check and ruff format --check"
	@echo "make docs        build the docs site (mkdocs build --strict) into site/"
	@echo "make bench       the speed benchmarks in scripts/"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST from Debian's dataset-fashion-mnist when we may install packages;
# otherwise aelab-train searches data/ and tries a torchvision download itself.
data:
	@if [ -f "$(FMNIST)" ] || ls data/fashion-mnist/train-images-idx3-ubyte* data/FashionMNIST/raw/train-images-idx3-ubyte* >/dev/null 2>&1; then \
		echo "Fashion-MNIST: found"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null); \
		echo "Fashion-MNIST: installed Debian's dataset-fashion-mnist"; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
		sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; \
		echo "Fashion-MNIST: installed Debian's dataset-fashion-mnist"; \
	else \
		echo "Fashion-MNIST: not installed here; aelab-train will search data/ and try a download"; \
	fi

train: install data
	$(VENV)/bin/aelab-train $(ARGS)

test: install data
	$(VENV)/bin/pytest -m "not slow" -n 3 --dist loadfile $(PYTEST_ARGS)

test-slow: install data
	$(VENV)/bin/pytest -m slow -n 2 --dist loadfile $(PYTEST_ARGS)

test-all: install data
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

bench: install data
	$(PY) scripts/bench_data.py
	$(PY) scripts/bench_train.py

clean-outputs:
	rm -rf outputs/runs outputs/sweeps
