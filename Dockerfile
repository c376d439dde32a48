# syntax=docker/dockerfile:1
#
# Kubemaas images. Two targets share one pinned base:
#
#   docker build --target operator -t kubemaas/operator:0.1.0 .   # kopf + kubernetes client, small
#   docker build --target runtime  -t kubemaas/runtime:0.1.0  .   # serve, fetch, compress, train
#
# The runtime image installs CPU-only torch from PyTorch's CPU wheel index, so it is
# not several GB of CUDA libraries. `--build-arg TORCH_VARIANT=cuda` installs the
# default index's torch instead (CUDA builds on Linux x86_64).
#
# Pin the base by digest for reproducible builds, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
# No HEALTHCHECK: Kubernetes probes (the chart's and the operator's Deployments) do that.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------
# base: the interpreter, the non-root user and the environment every stage shares.
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/kubemaas \
    PATH=/opt/kubemaas/bin:$PATH
# A fixed numeric uid/gid so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 65532 kubemaas \
    && useradd --system --uid 65532 --gid 65532 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin kubemaas

# ---------------------------------------------------------------------------
# wheel: builds the kubemaas wheel (pure Python: no compiler needed) and derives the
# operator's requirement lines from pyproject.toml, so version ranges live in one place.
FROM base AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY runtime ./runtime
# The distributions the operator imports (checked against its imports by tests/test_dockerfile.py).
ARG OPERATOR_DEPS="kopf kubernetes pydantic pydantic-settings PyYAML"
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -c "import re, sys, tomllib; want = {n.lower() for n in sys.argv[1].split()}; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; keep = [d for d in deps if re.split(r'[ <>=!~;\[]', d, maxsplit=1)[0].lower() in want]; missing = want - {re.split(r'[ <>=!~;\[]', d, maxsplit=1)[0].lower() for d in keep}; sys.exit(f'OPERATOR_DEPS not in pyproject dependencies: {sorted(missing)}') if missing else print(*keep, sep=chr(10))" "$OPERATOR_DEPS" > /wheels/operator-requirements.txt \
    && python -c "import sys, tomllib; extras = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['train']; print(*[d for d in extras if d.lower().startswith('torch')], sep=chr(10))" > /wheels/torch-requirements.txt

# ---------------------------------------------------------------------------
# operator-venv: kopf, the kubernetes client and the kubemaas package without its
# data-plane dependencies (no ONNX Runtime, numpy or torch in the operator image).
FROM base AS operator-venv
COPY --from=wheel /wheels /wheels
RUN python -m venv "$VIRTUAL_ENV" \
    && pip install --requirement /wheels/operator-requirements.txt \
    && pip install --no-deps /wheels/kubemaas-*.whl \
    && python -c "import kubemaas_operator.cli, kubemaas_runtime.cli"

# ---------------------------------------------------------------------------
# runtime-venv: everything the workload pods run (serve, fetch, compress, train).
FROM base AS runtime-venv
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY --from=wheel /wheels /wheels
# DL3013: "$1" is our own wheel; its dependency ranges are pyproject.toml's.
# hadolint ignore=DL3013
RUN python -m venv "$VIRTUAL_ENV" \
    && case "$TORCH_VARIANT" in \
         cpu) pip install --index-url "$TORCH_INDEX_URL" --requirement /wheels/torch-requirements.txt ;; \
         cuda) pip install --requirement /wheels/torch-requirements.txt ;; \
         *) echo "TORCH_VARIANT must be cpu or cuda, got '$TORCH_VARIANT'" >&2; exit 2 ;; \
       esac \
    && set -- /wheels/kubemaas-*.whl \
    && pip install "$1[train]" \
    && python -c "import torch, onnxruntime, kubemaas_runtime.cli; print('torch', torch.__version__)"

# ---------------------------------------------------------------------------
# operator: `kubemaas operator` (the chart's Deployment).
FROM base AS operator
LABEL org.opencontainers.image.title="kubemaas-operator" \
      org.opencontainers.image.description="Kubemaas operator: reconciles TrainingJob and ModelService" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=operator-venv /opt/kubemaas /opt/kubemaas
USER 65532:65532
WORKDIR /tmp
RUN ["kubemaas", "--help"]
ENTRYPOINT ["kubemaas"]
CMD ["operator"]

# ---------------------------------------------------------------------------
# runtime: the image the operator puts in training, compression and serving pods.
FROM base AS runtime
LABEL org.opencontainers.image.title="kubemaas-runtime" \
      org.opencontainers.image.description="Kubemaas data plane: kubemaas serve, fetch, train and compress" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=runtime-venv /opt/kubemaas /opt/kubemaas
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
RUN ["kubemaas", "--help"]
ENTRYPOINT ["kubemaas"]
CMD ["--help"]
