"""The contracts between the operator and the pods it starts, written once.

The operator (``kubemaas_operator``) and the runtime (``kubemaas_runtime``) both import this
module; the CRDs' enums and defaults are checked against it by ``tests/operator/test_contracts.py``.
It imports nothing beyond the standard library and pydantic, because the operator image
installs the kubemaas wheel without the runtime's dependencies (ONNX Runtime, torch).

Three contracts live here:

* compression modes: the values of ``ModelService.spec.compression.mode`` and of
  ``kubemaas compress --mode`` (the variant names plus ``auto`` and ``none``);
* serving defaults: what ``kubemaas serve`` uses when the operator says nothing, and what the
  CRD defaults ``spec.runtime`` to;
* env var names: every ``KUBEMAAS_*`` variable the operator sets on a workload container.
  Each must be a field of the settings object the container's command reads (a test checks
  this, so a misspelled name fails instead of being silently ignored by pydantic-settings).
"""

from __future__ import annotations

from typing import Final, Literal, get_args

ENV_PREFIX: Final = "KUBEMAAS_"
"""Prefix of every setting of every component (pydantic-settings ``env_prefix``)."""

# -- compression -------------------------------------------------------------------------------

CompressionMode = Literal["none", "auto", "int8-dynamic", "int8-static", "fp16"]
"""``spec.compression.mode``: ``none`` serves the bundle as given, ``auto`` the fastest variant
within the accuracy gate, a variant name that variant. A new variant is added here first."""

COMPRESSION_MODES: Final[tuple[CompressionMode, ...]] = get_args(CompressionMode)
DEFAULT_COMPRESSION_MODE: Final[CompressionMode] = "none"
TextgenCompressionMode = Literal["int4", "int8"]
"""The fixed modes of a text-generation bundle (weight-only MatMulNBits, gated on perplexity);
``spec.compression.mode`` takes them besides ``CompressionMode`` (``auto`` and ``none`` serve both tasks)."""
TEXTGEN_COMPRESSION_MODES: Final[tuple[TextgenCompressionMode, ...]] = get_args(TextgenCompressionMode)
DEFAULT_MAX_ACCURACY_DROP: Final = 0.01
"""Largest allowed accuracy drop relative to fp32, a fraction (0.01 = 1 point)."""

CompressionMethod = Literal["quantize", "prune", "distill"]
"""``spec.compression.methods`` and ``kubemaas compress --methods``: quantize = the int8/fp16
variants; prune (structured pruning) and distill (knowledge distillation) make students from
the teacher's checkpoint, which needs torch, so the compression pod runs the training image."""

COMPRESSION_METHODS: Final[tuple[CompressionMethod, ...]] = get_args(CompressionMethod)
DEFAULT_COMPRESSION_METHODS: Final[tuple[CompressionMethod, ...]] = ("quantize",)
STUDENT_METHODS: Final[frozenset[CompressionMethod]] = frozenset({"prune", "distill"})
"""The methods that train students (torch: the training image)."""
DEFAULT_MAX_PERPLEXITY_INCREASE: Final = 0.05
"""Text generation: largest allowed perplexity increase over fp32, a fraction (0.05 = +5 %)."""
TEXT_GENERATION: Final = "text-generation"
"""The manifest ``task`` of a text-generation bundle."""

# -- serving defaults --------------------------------------------------------------------------

MODEL_DIR: Final = "/mnt/models"
"""Where the storage initializer puts the bundle and ``kubemaas serve`` reads it."""
SERVING_PORT: Final = 8080
DEFAULT_MAX_BATCH_SIZE: Final = 32
DEFAULT_MAX_DELAY_MS: Final = 2.0
DEFAULT_MAX_QUEUE: Final = 256
DEFAULT_THREADS: Final = 1
DEFAULT_DRAIN_TIMEOUT_S: Final = 30
TERMINATION_LOG: Final = "/dev/termination-log"
"""Where compression and training pods write their result (contract 3)."""
TERMINATION_LIMIT: Final = 4096
"""Bytes Kubernetes keeps of a termination message (the kubelet truncates the file there)."""
OMITTED_VARIANTS_END: Final = " variants left out of this message; the compression log and compression.json list all]"
"""How a compression report's ``reason`` ends when its termination message could not hold every
variant (``omitted_variants_note``); the operator finds the note by this ending."""


def omitted_variants_note(omitted: int, total: int) -> str:
    """``[3 of 40 variants left out of this message; the compression log and compression.json list
    all]``: appended to the ``reason`` of a compression termination message that left variants out
    to stay under ``TERMINATION_LIMIT``; it travels into ``status.compression.reason`` with the
    reason. (compression.json is uploaded with a selected bundle; the log's table always has all.)"""
    return f"[{omitted} of {total}{OMITTED_VARIANTS_END}"


# -- env var names the operator sets ----------------------------------------------------------


def env_name(field: str) -> str:
    """The env var of a settings field: ``max_batch_size`` -> ``KUBEMAAS_MAX_BATCH_SIZE``."""
    return ENV_PREFIX + field.upper()


class ServingEnv:
    """Env of the serving container (``kubemaas serve``; ``ServingSettings``)."""

    MODEL_DIR: Final = env_name("model_dir")
    MODEL_NAME: Final = env_name("model_name")
    HOST: Final = env_name("host")
    PORT: Final = env_name("port")
    MAX_BATCH_SIZE: Final = env_name("max_batch_size")
    MAX_DELAY_MS: Final = env_name("max_delay_ms")
    MAX_QUEUE: Final = env_name("max_queue")
    BATCH_AXIS: Final = env_name("batch_axis")
    INTRA_OP_THREADS: Final = env_name("intra_op_threads")
    INTER_OP_THREADS: Final = env_name("inter_op_threads")
    DRAIN_TIMEOUT_S: Final = env_name("drain_timeout_s")
    AUTH_TOKEN_FILE: Final = env_name("auth_token_file")


class StorageEnv:
    """Env of the storage initializer (``kubemaas fetch``; ``StorageSettings``), which the
    compression and training containers also read when they fetch or upload."""

    PVC_ROOT: Final = env_name("pvc_root")


class CompressionEnv:
    """Env of the compression container (``kubemaas compress``; ``CompressSettings``)."""

    TERMINATION_LOG: Final = env_name("termination_log")
    INTRA_OP_THREADS: Final = env_name("intra_op_threads")


class TrainingEnv:
    """Env of the training container (``kubemaas train``; ``TrainingSettings``)."""

    BACKEND: Final = env_name("backend")
    SOURCE_NAMESPACE: Final = env_name("source_namespace")
    SOURCE_NAME: Final = env_name("source_name")
    SOURCE_UID: Final = env_name("source_uid")
    TERMINATION_LOG: Final = env_name("termination_log")
