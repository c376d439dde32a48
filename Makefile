# Kubemaas: the two commands are `make demo` and `make test`.
# Everything is installed from this repository's own files into .venv.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kubemaas-installed

.PHONY: demo test lint cluster-binaries node-binaries images e2e dev-cluster bench kind-e2e docs clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,dev,generate]'
	touch $(STAMP)

demo: venv
	$(BIN)/kubemaas demo

cluster-binaries:
	bash tests/cluster/build.sh

# kubelet, kube-proxy and CoreDNS for the real Node of `make e2e` (keyed apart from the above).
node-binaries:
	bash tests/cluster/build.sh --node

# The Dockerfile's images (podman, mmdebstrap base) for `make e2e`, tagged by content hash.
images:
	bash tests/cluster/images.sh operator serving training pause

# The whole lineage in real pods on a real Node (root + apt; skips elsewhere, fails under CI=true).
e2e: venv
	bash tests/e2e/run.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy operator runtime tests bench

test: venv cluster-binaries lint
	$(BIN)/python -m pytest

dev-cluster: venv cluster-binaries
	$(BIN)/python -m tests.cluster.devcluster

bench: venv cluster-binaries
	$(BIN)/python -m bench.serving
	$(BIN)/python -m bench.training
	$(BIN)/python -m bench.compression
	$(BIN)/python -m bench.operator

kind-e2e:
	bash tests/e2e/kind.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

docs: venv
	$(BIN)/python -m kubemaas_operator.crd_reference .
