# The two commands of this repository:  make reproduce  and  make test.
# Both create .venv and install everything on first use.
#
# torch is pinned to the CPU build by default. On a GPU machine choose a CUDA build with, e.g.
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cu126
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
PRESET ?= tiny
THREADS ?= 1
STAMP := $(VENV)/.installed

.PHONY: install test reproduce sync check-sync nbdev-test pytest clean-venv

install: $(STAMP)

$(STAMP): settings.ini setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)" --index-url $(TORCH_INDEX),)
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)" "transformer-lens>=3.9,<3.10" \
	  "nbdev==2.4.14" "fastcore<1.13" "execnb<0.2" "ghapi<2" -e ".[dev]"
	@touch $@

test: install check-sync nbdev-test pytest
	@echo "make test: all checks passed"

sync: install
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean
	$(BIN)/jupyter nbconvert --to markdown --stdout nbs/index.ipynb 2>/dev/null > README.md

check-sync: install
	PATH=$(CURDIR)/$(BIN):$$PATH .ci/check-sync

nbdev-test: install
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing

pytest: install
	OMP_NUM_THREADS=1 $(BIN)/pytest -q tests -m "not slow"

reproduce: install
	OMP_NUM_THREADS=$(THREADS) $(BIN)/vpd reproduce --preset $(PRESET)

clean-venv:
	rm -rf $(VENV)
