# Two commands set everything up on a fresh machine:
#   make run    create .venv, install, index seeds/ on first use, serve the chat page
#   make test   install what the tests need (Chromium included) and run the whole suite
# Both install Debian's tesseract-ocr (English) when missing: scanned PDFs and images are read with it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of PyTorch; installed first so pip does not pull a CUDA build.
TORCH  ?= torch==2.13.0
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test chromium tesseract bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The tests also cover `qa index --ray`, which needs the optional Ray extra; `make run` does not.
$(VENV)/.ray-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	touch $@

run: $(VENV)/.installed tesseract
	$(PY) app.py

# The PDF tests write their PDFs in DejaVu Sans (fpdf2 needs a TrueType font for
# the seeds' curly quotes); chromium usually brings it, but not necessarily.
FONT := /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf

chromium:
	@{ command -v chromium >/dev/null 2>&1 && [ -f $(FONT) ]; } || { \
		echo "installing Debian's chromium and fonts-dejavu-core for the browser and PDF tests"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; }

# OCR of scanned PDF pages and images (qa.ocr) runs Debian's tesseract; without its
# English data it cannot read a word, so both are checked.
tesseract:
	@{ command -v tesseract >/dev/null 2>&1 && tesseract --list-langs 2>/dev/null | grep -qx eng; } || { \
		echo "installing Debian's tesseract-ocr and tesseract-ocr-eng to read scanned PDFs and images"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq tesseract-ocr tesseract-ocr-eng >/dev/null; }

test: $(VENV)/.ray-installed chromium tesseract
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) bench/quality.py
	$(PY) bench/speed.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
