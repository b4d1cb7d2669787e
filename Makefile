# Two commands set everything up on a fresh machine:
#   make run    create .venv, install, index seeds/ on first use, serve the chat page
#   make test   install what the tests need (Chromium included) and run the whole suite

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of PyTorch; installed first so pip does not pull a CUDA build.
TORCH  ?= torch==2.13.0
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test chromium bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(PY) app.py

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

test: $(VENV)/.installed chromium
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/quality.py
	$(PY) bench/speed.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
