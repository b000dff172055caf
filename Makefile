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

demo: $(STAMP)
	mkdir -p $(DEMO)
	$(BIN)/ae train sample --variant denoising --epochs 3 -o $(DEMO)/dae.safetensors --preview $(DEMO)/dae-preview.png
	$(BIN)/ae info $(DEMO)/dae.safetensors
	$(BIN)/ae denoise sample:test -m $(DEMO)/dae.safetensors --add-noise 0.2 --reference sample:test -o $(DEMO)/denoised --grid $(DEMO)/denoised.png
	$(BIN)/ae train sample --variant vae --epochs 5 -o $(DEMO)/vae.safetensors -q
	$(BIN)/ae sample -m $(DEMO)/vae.safetensors -n 64 --grid $(DEMO)/vae-samples.png --seed 1
	$(BIN)/ae encode sample:test -m $(DEMO)/vae.safetensors -o $(DEMO)/latents.npz --index $(DEMO)/latents.txt
	$(BIN)/ae train sample:class=7 -o $(DEMO)/sneakers.safetensors -q
	$(BIN)/ae score sample:test -m $(DEMO)/sneakers.safetensors --labels class=7 -o $(DEMO)/scores.csv
	$(BIN)/ae score sample:test -m $(DEMO)/sneakers.safetensors --top 8 --maps $(DEMO)/top-maps --format table

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache *.egg-info
