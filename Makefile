# The kit's two everyday commands: `make demo` runs the study, `make test` tests it.
# Both create (or reuse) the virtual environment .venv from requirements-dev.txt (runtime + tools) first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= demo
# pytest-xdist workers for make test and test-fast: one per core (WORKERS=0 runs in one process)
WORKERS ?= auto
STAMP := $(VENV)/.installed-requirements

.PHONY: demo test test-fast bench gpu-window install lab docs clean-results

$(STAMP): requirements.txt requirements-dev.txt requirements-export.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	cat requirements.txt requirements-dev.txt requirements-export.txt > $(STAMP)

install: $(STAMP)  ## create/update the virtual environment only

demo: $(STAMP)  ## run the notebooks headlessly on 300 real lesions of the bundled archive (PROFILE=demo|smoke|cpu|class)
	$(PY) -m helpers.pipeline --profile $(PROFILE) $(ARGS)

test: $(STAMP)  ## lint (ruff), then unit tests + every notebook under nbval (smoke profile), one worker per core
	$(PY) -m ruff check helpers tests
	$(PY) -m pytest -c tests/pytest.ini --rootdir . tests notebooks -n $(WORKERS) $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the same without the slow tests (notebooks, multi-epoch trainings, pipelines)
	$(PY) -m ruff check helpers tests
	$(PY) -m pytest -c tests/pytest.ini --rootdir . tests notebooks -m "not slow" -n $(WORKERS) $(PYTEST_ARGS)

bench: $(STAMP)  ## benchmarks: data path, training, inference → table + results/bench.csv
	$(PY) -m helpers.tools.bench $(ARGS)

# No venv step: a GPU machine may be offline and have its own torch (the venv's python when there is one).
OUT ?= results/gpu-window
MINUTES ?= 9
WINDOW_PY ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-window:  ## the GPU study in a time budget: T4 check, bench, recipes, grid → bundle in OUT (MINUTES=9 DATA_DIR=shrunk ISIC copy)
	$(WINDOW_PY) -m helpers.tools.gpu_window --out $(OUT) --minutes $(MINUTES) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(ARGS)

lab: $(STAMP)  ## open JupyterLab on the notebooks
	$(PY) -m jupyter lab notebooks

docs: $(STAMP)  ## the course site: docs/ and the executed demo notebooks as static HTML in site/ (offline; see docs/publishing.md)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

clean-results:  ## remove executed notebooks and run folders (keeps data/)
	rm -rf results/notebooks results/runs
