# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo serve test lint unit integration bench-smoke clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# The CPU wheel of torch lies on disk; asking for it first keeps pip away from CUDA builds.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mlaas4hep demo

serve: $(STAMP)
	$(VENV)/bin/mlaas4hep serve

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -q tests
	$(MAKE) bench-smoke

bench-smoke: $(STAMP)
	$(PY) bench/smoke.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
