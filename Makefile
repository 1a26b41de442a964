# Two commands do all the set-up: `make demo` and `make test`. Each creates .venv and installs qelm.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= runs/demo

.PHONY: demo test lint typecheck test-gpu test-noise gallery bench docs clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: on these machines torch==2.13.0 resolves to a local CPU wheel, while an
# unpinned request pulls a multi-GB CUDA build
$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,docs]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/qelm demo --out $(OUT)

# the linter and the type check first: a red one stops the run before the tests (tests/test_docs.py builds the
# site as `make docs` does)
test: $(VENV)/.installed
	$(BIN)/ruff check qelm tests docs/_hooks
	$(BIN)/mypy qelm
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check qelm tests

# mypy on the library (also run by `make test`)
typecheck: $(VENV)/.installed
	$(BIN)/mypy qelm

# the tests marked gpu (they skip, with the reason, where torch sees no CUDA GPU)
test-gpu: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m gpu

# the noise extra (mitiq, device snapshots) in a venv of its own: mitiq 1.1 holds numpy below 2.3
NOISE_VENV := .venv-noise
$(NOISE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(NOISE_VENV)
	$(NOISE_VENV)/bin/pip install --quiet torch==2.13.0
	$(NOISE_VENV)/bin/pip install --quiet -e '.[dev,noise]'
	touch $@

test-noise: $(NOISE_VENV)/.installed
	$(NOISE_VENV)/bin/python -m pytest -q tests/test_noise.py tests/test_mitigation.py

gallery: $(VENV)/.installed
	$(BIN)/qelm gallery circuits

# the documentation site, into site/: warnings are errors, and the tutorials run the scripts of examples/
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/speed.py --quick

clean:
	rm -rf $(VENV) $(NOISE_VENV) runs site
