# Two entry points on a fresh machine: `make demo` and `make test`. Both create .venv if missing and install
# everything (PyTorch CPU pinned, ROS 2 Kilted from PyPI wheels, runtimes, test tools); a second run is fast.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA   ?=
PIP    := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: setup demo test bench colcon clean

setup: $(STAMP)

$(STAMP): setup.py constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip "setuptools<80" wheel
	$(PIP) torch==2.13.0   # first and alone, so no resolver ever picks a CUDA build
	$(PIP) -c constraints.txt -e ".[ros,train,tools,test]"
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/carla-seg demo $(if $(DATA),--data $(DATA))

test: $(STAMP)
	$(PY) -m pytest -ra

bench: $(STAMP)
	$(VENV)/bin/carla-seg bench model
	$(VENV)/bin/carla-seg bench transport
	$(VENV)/bin/carla-seg bench node

# Build the package the way a ROS workspace does (install/ holds lib/carla_seg_ros/seg_node and share/).
colcon: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/colcon build --base-paths . --build-base build --install-base install

clean:
	rm -rf build install log out .pytest_cache
