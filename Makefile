# Two set-up commands (README): `make demo` runs the main job, `make test` the whole test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# One thread per process: on 2 shared cores torch's default threads slow small steps badly (SPEC §10).
export OMP_NUM_THREADS ?= 1
export TF_CPP_MIN_LOG_LEVEL ?= 2
PYTEST := $(PY) -m pytest -q -p no:cacheprovider

.PHONY: venv demo test test-torch test-tensorflow test-jax test-backend-free bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e ".[torch,tensorflow,jax,dev]" "torch==2.13.0" "triton==3.9.0"
	touch $@

venv: $(VENV)/.installed

demo: venv
	KERAS_BACKEND=torch $(VENV)/bin/kmedssl pretrain spcl --recipe recipes/demo.toml --output runs/demo --overwrite
	KERAS_BACKEND=torch $(VENV)/bin/kmedssl evaluate runs/demo --protocol finetune,linear --baseline scratch --labels 0.1 --views frontal

test: venv
	$(MAKE) --no-print-directory test-backend-free test-torch test-tensorflow test-jax

test-backend-free: venv
	KERAS_BACKEND=torch $(PYTEST) -m "backend_free"
test-torch: venv
	KERAS_BACKEND=torch $(PYTEST) -m "not backend_free"
test-tensorflow: venv
	KERAS_BACKEND=tensorflow $(PYTEST) -m "not backend_free"
test-jax: venv
	KERAS_BACKEND=jax $(PYTEST) -m "not backend_free"

bench: venv
	KERAS_BACKEND=torch $(PY) benchmarks/train_step.py --sizes phantom --backends torch

clean:
	rm -rf $(VENV) build *.egg-info
