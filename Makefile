# Two commands do all the set-up: `make demo` and `make test`. Each creates .venv and installs qelm.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= runs/demo

.PHONY: demo test test-gpu gallery bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: on these machines torch==2.13.0 resolves to a local CPU wheel, while an
# unpinned request pulls a multi-GB CUDA build
$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/qelm demo --out $(OUT)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# the tests marked gpu (they skip, with the reason, where torch sees no CUDA GPU)
test-gpu: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m gpu

gallery: $(VENV)/.installed
	$(BIN)/qelm gallery circuits

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/speed.py --quick

clean:
	rm -rf $(VENV) runs
