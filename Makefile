# stk-vqa developer commands. `make install` makes a venv with the CPU build of torch first
# (a bare `torch` requirement would pull a multi-GB CUDA build), pinned by .ci/constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
RECIPE ?=
export OMP_WAIT_POLICY ?= PASSIVE
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test test-slow test-gpu test-render render-deps test-browser quickstart bench learn-to-see lint format

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -c .ci/constraints.txt -e '.[dev]'

# The test command (what .ci/run runs): fast, offline, CPU.
test:
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider

test-slow:
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

test-gpu:
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m gpu

# The render engine (docs/rendering.md): apt packages, pysupertuxkart 1.1.2 built once (~6-9 min, wheel cached in
# ~/.cache/stk-vqa), the label-aware shaders generated from the game data.
render-deps: $(BIN)/python
	stk_vqa/render/install_engine.sh $(BIN)/python

test-render:
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m render tests/test_render.py

# `stk-vqa app` in headless Chromium: needs `pip install -e '.[app]'` and Debian's `chromium` (playwright uses it,
# it downloads no browser). Rewrites docs/images/app.png (STK_VQA_APP_SCREENSHOT=path to write it elsewhere).
test-browser:
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m browser

quickstart: install
	$(BIN)/stk-vqa quickstart $(if $(RECIPE),--recipe $(RECIPE) --tiny_model false)

# Lint and format check (ruff from the dev extra, inside the venv); `make format` rewrites.
lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# CPU benchmarks (results in benchmarks/results/); benchmarks/gpu.sh is for a CUDA machine.
bench:
	$(BIN)/python benchmarks/bench_generate.py
	$(BIN)/python benchmarks/bench_build.py
	$(BIN)/python benchmarks/bench_train.py
	PYTHONPATH=. $(BIN)/python benchmarks/bench_eval.py --n_images 2 --batch_size 9 --device cpu --out benchmarks/results/eval.json
	$(BIN)/python benchmarks/grouped_rows_leakage.py

# Does a model trained with stk-vqa read pixels? Renders (needs `make render-deps`), builds, trains twice, evaluates:
# ~80 min on 2 CPU cores; every stage resumes. Then the image-only probe of the same data (~10 min).
learn-to-see: install
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/learn_to_see.py $(ARGS)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/kart_presence_probe.py
