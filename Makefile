# deltatune: `make run` and `make test` work on a fresh clone; the first call builds .venv.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Rebuilt whenever pyproject.toml changes, so new dependencies arrive without a manual step.
STAMP := $(VENV)/.deltatune-installed

.DEFAULT_GOAL := help
.PHONY: help venv run test fuzz lint examples clean distclean

help:
	@echo "make run        start deltatune on its embedded default (API on 127.0.0.1:8000 + a worker)"
	@echo "make test       run every test (unit, integration, slow; a bounded schemathesis run)"
	@echo "make fuzz       a longer schemathesis run over every operation (FUZZ_MAX_EXAMPLES=300)"
	@echo "make lint       ruff, mypy, and a check that examples/*.jsonl match their generator"
	@echo "make examples   regenerate examples/train.jsonl and examples/validation.jsonl"
	@echo "make clean      remove caches and build output (keeps .venv and .deltatune)"
	@echo "make distclean  clean, and remove .venv too"

venv: $(STAMP)

# torch first, pinned: here that resolves to the CPU wheel, so the package install after it finds
# torch satisfied and pulls in no CUDA build (the Dockerfile installs the CUDA one for GPU workers).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

run: $(STAMP)
	$(BIN)/deltatune serve

test: $(STAMP)
	$(BIN)/python -m pytest tests

# The same test as in `make test`, ten times the cases per operation (about 10,000 in all).
FUZZ_MAX_EXAMPLES ?= 300
fuzz: $(STAMP)
	FUZZ_MAX_EXAMPLES=$(FUZZ_MAX_EXAMPLES) $(BIN)/python -m pytest tests/service/test_fuzz.py -s

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy tuning core service worker benchmarks
	$(BIN)/python examples/make_dataset.py --check

examples: $(STAMP)
	$(BIN)/python examples/make_dataset.py

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +

# .deltatune (the embedded database, uploads and artifacts) is user data: no target deletes it.
distclean: clean
	rm -rf $(VENV)
