# syntax=docker/dockerfile:1
#
# Kubemaas images. Three targets share one pinned base:
#
#   docker build --target operator -t kubemaas/operator:0.1.0 .   # kopf + kubernetes client, small
#   docker build --target serving  -t kubemaas/serving:0.1.0  .   # serve, fetch, compress: ONNX Runtime, no torch
#   docker build --target training -t kubemaas/training:0.1.0 .   # the serving image's packages + torch
#
# The operator puts `serving` in compression Jobs and ModelService Deployments (they
# start fast and scale cheaply without torch) and `training` in TrainingJob pods.
#
# The training image installs CPU-only torch from PyTorch's CPU wheel index, so it is
# not several GB of CUDA libraries. `--build-arg TORCH_VARIANT=cuda` installs the
# default index's torch instead (CUDA builds on Linux x86_64). torch goes into its own
# layer BEFORE the kubemaas wheel, so a code change rebuilds only a small layer on top
# and every version of the training image shares the big one.
#
# Pin the base by digest for reproducible builds, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
# Any Debian-like root filesystem with Python 3.11 (`python`, `python -m venv`,
# `python -m pip`), groupadd and useradd works as the base too (tests/cluster/images.sh
# uses an mmdebstrap bookworm root filesystem).
#
# pip's cache is a BuildKit cache mount: downloads survive between builds, and no
# layer ever holds them. No HEALTHCHECK: Kubernetes probes do that.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------
# base: the interpreter, the non-root user and the environment every stage shares.
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
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
ARG OPERATOR_DEPS="kopf kubernetes pydantic pydantic-settings PyYAML prometheus-client"
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -c "import re, sys, tomllib; want = {n.lower() for n in sys.argv[1].split()}; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; keep = [d for d in deps if re.split(r'[ <>=!~;\[]', d, maxsplit=1)[0].lower() in want]; missing = want - {re.split(r'[ <>=!~;\[]', d, maxsplit=1)[0].lower() for d in keep}; sys.exit(f'OPERATOR_DEPS not in pyproject dependencies: {sorted(missing)}') if missing else print(*keep, sep=chr(10))" "$OPERATOR_DEPS" > /wheels/operator-requirements.txt \
    && python -c "import re, sys, tomllib; extras = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['train']; print(*[d for d in extras if re.split(r'[ <>=!~;\[]', d, maxsplit=1)[0].lower() == 'torch'], sep=chr(10))" > /wheels/torch-requirements.txt

# ---------------------------------------------------------------------------
# operator-venv: kopf, the kubernetes client and the kubemaas package without its
# data-plane dependencies (no ONNX Runtime, numpy or torch in the operator image).
FROM base AS operator-venv
COPY --from=wheel /wheels /wheels
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv "$VIRTUAL_ENV" \
    && pip install --requirement /wheels/operator-requirements.txt \
    && pip install --no-deps /wheels/kubemaas-*.whl \
    && python -c "import kubemaas_operator.cli, kubemaas_runtime.cli"

# ---------------------------------------------------------------------------
# serving-venv: what serving and compression pods run (serve, fetch, compress).
FROM base AS serving-venv
COPY --from=wheel /wheels /wheels
# DL3013: "$1" is our own wheel; its dependency ranges are pyproject.toml's.
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv "$VIRTUAL_ENV" \
    && set -- /wheels/kubemaas-*.whl \
    && pip install "$1" \
    && python -c "import onnxruntime, kubemaas_runtime.cli; import importlib.util as u; assert u.find_spec('torch') is None, 'torch leaked into the serving image'"

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
# serving: the image of compression Jobs and ModelService Deployments.
FROM base AS serving
LABEL org.opencontainers.image.title="kubemaas-serving" \
      org.opencontainers.image.description="Kubemaas serving: kubemaas serve, fetch and compress (ONNX Runtime, no torch)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=serving-venv /opt/kubemaas /opt/kubemaas
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
RUN ["kubemaas", "--help"]
ENTRYPOINT ["kubemaas"]
CMD ["--help"]

# ---------------------------------------------------------------------------
# training: the image of TrainingJob pods: torch first (a layer that changes only
# with the torch requirement), then the kubemaas wheel with its `train` extra.
FROM base AS training
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
LABEL org.opencontainers.image.title="kubemaas-training" \
      org.opencontainers.image.description="Kubemaas training: kubemaas train (torch), plus everything in the serving image" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=wheel /wheels/torch-requirements.txt /opt/kubemaas-wheels/torch-requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv "$VIRTUAL_ENV" \
    && case "$TORCH_VARIANT" in \
         cpu) pip install --index-url "$TORCH_INDEX_URL" --requirement /opt/kubemaas-wheels/torch-requirements.txt ;; \
         cuda) pip install --requirement /opt/kubemaas-wheels/torch-requirements.txt ;; \
         *) echo "TORCH_VARIANT must be cpu or cuda, got '$TORCH_VARIANT'" >&2; exit 2 ;; \
       esac
COPY --from=wheel /wheels /opt/kubemaas-wheels
# DL3013: "$1" is our own wheel; its dependency ranges are pyproject.toml's.
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    set -- /opt/kubemaas-wheels/kubemaas-*.whl \
    && pip install "$1[train]" \
    && python -c "import torch, onnxruntime, kubemaas_runtime.cli; print('torch', torch.__version__)"
USER 65532:65532
WORKDIR /tmp
RUN ["kubemaas", "--help"]
ENTRYPOINT ["kubemaas"]
CMD ["--help"]
