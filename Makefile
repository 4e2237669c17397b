# `make demo`: create .venv, install lookalike, train on the embedded characters and serve the app.
# `make test`: the test suite (what .ci/run runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# Offline machines with the project's shared data beside the checkout use its copy of the backbone weights.
SHARED_WEIGHTS := $(wildcard ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5)
ifneq ($(SHARED_WEIGHTS),)
export LOOKALIKE_BACKBONE_WEIGHTS ?= $(abspath $(SHARED_WEIGHTS))
endif
export GRADIO_ANALYTICS_ENABLED = False

.PHONY: demo test install clean

install: $(BIN)/.installed

# PYTHONWARNINGS: setuptools prints an information notice for every editable install of a mapped package layout.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: install
	$(BIN)/lookalike demo

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
