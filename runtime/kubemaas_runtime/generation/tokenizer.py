"""The bundle's tokenizer (``tokenizer.json``, Hugging Face ``tokenizers``), its chat template, and
incremental detokenization for streaming.

The chat template is rendered with Jinja2's immutable sandbox, as ``transformers``'
``apply_chat_template`` does, from ``chat_template.jinja`` or ``tokenizer_config.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubemaas_runtime.bundle import BundleError
from kubemaas_runtime.generation.folder import CHAT_TEMPLATE, TOKENIZER, TOKENIZER_CONFIG


class TextTokenizer:
    """Encode/decode text and render chat messages into a prompt."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        path = Path(directory) / TOKENIZER
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception
            raise BundleError(f"{path}: cannot load the tokenizer: {exc}") from exc
        self.config = _read_config(Path(directory) / TOKENIZER_CONFIG)
        template_file = Path(directory) / CHAT_TEMPLATE
        template = template_file.read_text() if template_file.is_file() else self.config.get("chat_template")
        self.chat_template = template if isinstance(template, str) else None
        self._template: Any = None
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        self.max_token_chars = max((len(t) for t in vocab), default=1)
        """The longest token's text: no token covers more characters of a prompt than 4 times this (the
        margin covers normalizers and byte-level/metaspace spellings), so a prompt of more than
        ``4 * max_token_chars * N`` characters has more than N tokens without being tokenized."""

    def encode(self, text: str) -> list[int]:
        """Token ids; special tokens written in the text (e.g. ``<|user|>``) map to their ids."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The prompt for ``messages`` with the generation prompt appended; ValueError without a template."""
        if self.chat_template is None:
            raise ValueError("this model has no chat template; use /v1/completions")
        if self._template is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            self._template = env.from_string(self.chat_template)
        special = {k: v for k, v in self.config.items() if k in ("bos_token", "eos_token") and isinstance(v, str)}
        return str(self._template.render(messages=messages, add_generation_prompt=True, **special))


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: not valid JSON: {exc}") from exc
    return raw if isinstance(raw, dict) else {}


class IncrementalDetokenizer:
    """Text deltas for a growing list of ids without re-decoding everything (vLLM's prefix/read offsets).

    Byte-level BPE splits multi-byte characters over tokens; a delta ending in U+FFFD is held back
    until the character is complete.
    """

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        prefix = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        full = self.tokenizer.decode(self.ids[self.prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return full[len(prefix) :]
        return ""
