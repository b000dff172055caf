# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= demo-out

.PHONY: demo test install clean

# (Re)install when the project's metadata changes; the stamp keeps later runs instant.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,plot]'
	touch $(STAMP)

install: $(STAMP)

# The tour of ae on its bundled sample (about a minute on 2 cores): $(DEMO)/index.html shows it all.
demo: $(STAMP)
	$(BIN)/ae demo -o $(DEMO)

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache *.egg-info
