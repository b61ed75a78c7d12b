# Fresh-machine entry points: `make demo` and `make test` each install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and pinned, so that no dependency pulls another (multi-GB) build;
# on this project's machines the pin resolves to the CPU wheel on local disk. Override
# TORCH to pick a build elsewhere, e.g. TORCH="torch==2.13.0 --index-url URL".
TORCH ?= torch==2.13.0
# Every first-party plugin is its own distribution, installed like a third-party one.
PLUGINS := $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml))
# Example plugins (the plugin tutorial's finished code), installed for development and CI only.
EXAMPLES := $(patsubst %/pyproject.toml,%,$(wildcard examples/*/pyproject.toml))

.PHONY: install install-dev demo demo-core test docs clean check-plugin-path screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e . $(foreach p,$(PLUGINS),-e $(p))

install-dev: install
	$(BIN)/pip install --quiet -e '.[test,docs]' $(foreach p,$(PLUGINS) $(EXAMPLES),-e '$(p)[test]')

# The demo, on the bundled ORL sample. First the pretrained path (docs/your-own-photos.md):
# dlib's face encoder, no training: enrol a folder of people, calibrate on strangers, identify
# a folder of photos (a table and a contact sheet). Then training from scratch (docs/faces.md):
# train on some people, enrol one photo of each of the others, calibrate, identify. Then
# style transfer on bundled photos. (--force: a demo run again replaces its own outputs.)
demo: install
	$(BIN)/pip install --quiet -e 'plugins/faces[dlib]'
	$(BIN)/convgen plugins
	CONVGEN=$(BIN)/convgen bash scripts/demo-photos.sh runs/demo/photos
	$(BIN)/convgen run faces-demo -o runs/demo/faces --force
	$(BIN)/convgen run faces-stylize -o runs/demo/stylize --force

# The core alone, on generated identities: layers, training, evaluation.
demo-core: install
	$(BIN)/convgen run inspect -o runs/demo/inspect --force
	$(BIN)/convgen run train -o runs/demo/train --force
	$(BIN)/convgen run evaluate weights=runs/demo/train/encoder.safetensors -o runs/demo/evaluate --force

test: install-dev
	$(BIN)/python -m pytest

docs: install-dev
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict

clean:
	rm -rf runs site site-screenshots .pytest_cache

# The plugin author's path (docs/writing-plugins.md): the tutorial's commands run against its
# finished plugin (whose tests `make test` runs); a freshly scaffolded plugin, installed like a
# user's (here into a temporary folder, so that the environment stays as it was), passes its own test.
check-plugin-path: install-dev
	PATH="$(abspath $(BIN)):$$PATH" bash examples/convgen-zstack/tutorial.sh
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(BIN)/convgen plugins new scaffold-check --dir "$$tmp" && \
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --no-index --target "$$tmp/site" "$$tmp/convgen-scaffold-check" && \
	cd "$$tmp/convgen-scaffold-check" && PYTHONPATH="$$tmp/site" $(abspath $(BIN))/python -m pytest -p no:cacheprovider

# PNG screenshots of the built site in headless Chromium (Debian: apt-get install chromium),
# for reviewers: the home page, the plugin tutorial and the hooks reference.
screenshots: docs
	$(BIN)/python scripts/screenshots.py --out site-screenshots
