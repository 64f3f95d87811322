"""A llama GGUF file as an mlx-lm model and a transformers tokenizer.

`mx.load` reads GGUF itself and returns Q4_0/Q4_1/Q8_0 tensors already in MLX's affine
layout (packed uint32 `weight`, `scales`, `biases`, 32 weights per group). It does not name
them as mlx-lm's llama model expects, choose each layer's bits, or build a tokenizer;
this module does those three things so the MLX engine can serve the same single file the
llama.cpp engine does.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from mlx_lm.models.llama import Model, ModelArgs
    from transformers import PreTrainedTokenizerFast

GROUP_SIZE = 32

# GGUF tensor stem inside a block -> mlx-lm llama module path inside a layer.
_BLOCK_PARTS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_LEVEL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)")

# llama.cpp's pre-tokenizer names whose split rule is "each digit alone, then GPT-2's
# regex"; HF expresses the same rule as Digits(individual) followed by ByteLevel.
_DIGIT_SPLITTING_PRE = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"}
_GPT2_PRE = {"gpt-2", "phi-2", "roberta-bpe"}

# llama.cpp ends generation on these token texts as well as on the declared EOS/EOT ids
# (llama-vocab.cpp, "maintain a list of tokens that cause end-of-generation"); matching
# its list keeps both engines stopping at the same place.
_EOG_TEXTS = {
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
    # fill-in-the-middle pad / repo / file separators
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
    "<|fim_sep|>",
    "<fim-sep>",
}
_CONTROL, _USER_DEFINED = 3, 4


class GgufError(ValueError):
    """The GGUF file is valid but uses something this loader does not map."""


@dataclasses.dataclass
class GgufModel:
    """What the MLX engine needs from one GGUF file."""

    model: Any
    tokenizer: Any  # transformers.PreTrainedTokenizerFast
    eos_token_ids: frozenset[int]
    metadata: dict[str, Any]


def load_gguf(path: str) -> GgufModel:
    """Read `path` and return the quantized mlx-lm model, its tokenizer and stop ids."""
    import mlx.core as mx

    # With return_metadata, a GGUF file loads as (tensors by name, header entries).
    weights, metadata = cast("tuple[dict[str, mx.array], dict[str, Any]]", mx.load(path, return_metadata=True))
    model = build_model(weights, metadata)
    return GgufModel(
        model=model,
        tokenizer=build_tokenizer(metadata),
        eos_token_ids=frozenset(eog_token_ids(metadata)),
        metadata=metadata,
    )


def meta_value(metadata: dict[str, Any], key: str, default: Any = None) -> Any:
    """A metadata entry as a plain Python value (mx.load returns numbers as 0-d arrays)."""
    value = metadata.get(key, default)
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value


def model_args(weights: dict[str, Any], metadata: dict[str, Any]) -> ModelArgs:
    """mlx-lm llama ModelArgs from the GGUF header."""
    from mlx_lm.models.llama import ModelArgs

    arch = meta_value(metadata, "general.architecture")
    if arch != "llama":
        raise GgufError(f"GGUF architecture {arch!r} is not supported by the MLX engine (only 'llama')")
    if meta_value(metadata, "llama.rope.scaling.type", "none") not in ("none", None):
        raise GgufError("GGUF rope scaling is not supported by the MLX engine")

    def need(key: str) -> Any:
        value = meta_value(metadata, f"llama.{key}")
        if value is None:
            raise GgufError(f"GGUF metadata lacks llama.{key}")
        return value

    heads = int(need("attention.head_count"))
    hidden = int(need("embedding_length"))
    vocab = meta_value(metadata, "llama.vocab_size") or len(metadata["tokenizer.ggml.tokens"])
    return ModelArgs(
        model_type="llama",
        hidden_size=hidden,
        num_hidden_layers=int(need("block_count")),
        intermediate_size=int(need("feed_forward_length")),
        num_attention_heads=heads,
        num_key_value_heads=int(meta_value(metadata, "llama.attention.head_count_kv", heads)),
        head_dim=int(meta_value(metadata, "llama.attention.key_length", hidden // heads)),
        rms_norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        vocab_size=int(vocab),
        rope_theta=float(meta_value(metadata, "llama.rope.freq_base", 10000.0)),
        # convert_hf_to_gguf permutes q/k rows so llama.cpp can rotate adjacent pairs;
        # MLX's "traditional" rope is that same adjacent-pair rotation.
        rope_traditional=True,
        max_position_embeddings=meta_value(metadata, "llama.context_length"),
        tie_word_embeddings="output.weight" not in weights,
    )


def mlx_name(gguf_name: str) -> str:
    """The mlx-lm parameter path for one GGUF tensor name (suffix kept)."""
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in _TOP_LEVEL:
        return f"{_TOP_LEVEL[stem]}.{suffix}"
    match = _BLOCK_TENSOR.fullmatch(stem)
    if match and match.group(2) in _BLOCK_PARTS:
        return f"model.layers.{match.group(1)}.{_BLOCK_PARTS[match.group(2)]}.{suffix}"
    raise GgufError(f"GGUF tensor {gguf_name!r} has no counterpart in mlx-lm's llama model")


def layer_bits(weights: dict[str, Any]) -> dict[str, int]:
    """Bits per quantized module, read off the packed width against the scales width."""
    import mlx.core as mx

    bits = {}
    for name, weight in weights.items():
        module, _, suffix = name.rpartition(".")
        if suffix != "weight" or weight.dtype != mx.uint32:
            continue
        scales = weights.get(f"{module}.scales")
        if scales is None:
            raise GgufError(f"quantized tensor {name} has no scales")
        # Each uint32 holds 32/bits weights; each group of GROUP_SIZE weights has one scale.
        packed_cols, groups = weight.shape[-1], scales.shape[-1]
        value, rest = divmod(32 * packed_cols, groups * GROUP_SIZE)
        if rest or value not in (2, 3, 4, 5, 6, 8):
            raise GgufError(f"cannot infer bits for {name}: {packed_cols} packed columns, {groups} groups")
        bits[module] = value
    return bits


def build_model(weights: dict[str, Any], metadata: dict[str, Any]) -> Model:
    """Instantiate mlx-lm's llama model with each layer quantized as the file stores it."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.models.llama import Model

    mapped = {mlx_name(name): tensor for name, tensor in weights.items()}
    bits = layer_bits(mapped)
    model = Model(model_args(weights, metadata))
    # Layers stored unquantized (norms, or types mx.load dequantizes) stay dense.
    nn.quantize(
        model,
        class_predicate=lambda path, _module: {"group_size": GROUP_SIZE, "bits": bits[path]} if path in bits else False,
    )
    model.eval()
    model.load_weights(list(mapped.items()), strict=True)
    mx.eval(model.parameters())
    return model


def build_tokenizer(metadata: dict[str, Any]) -> PreTrainedTokenizerFast:
    """A byte-level BPE transformers tokenizer equal to llama.cpp's for this vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    kind = meta_value(metadata, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise GgufError(f"GGUF tokenizer {kind!r} is not supported by the MLX engine (only byte-level BPE 'gpt2')")
    pre = meta_value(metadata, "tokenizer.ggml.pre", "gpt-2")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    pre_tokenizer: pre_tokenizers.PreTokenizer
    if pre in _DIGIT_SPLITTING_PRE:
        pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in _GPT2_PRE:
        pre_tokenizer = byte_level
    else:
        raise GgufError(f"GGUF pre-tokenizer {pre!r} is not supported by the MLX engine")

    tokens = list(metadata["tokenizer.ggml.tokens"])
    kinds = _token_types(metadata, len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
    backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.ByteLevel()
    # Control tokens only match in text when the caller asks for special parsing, as in
    # llama.cpp; user-defined tokens always match there, like non-special added tokens here.
    backend.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, kinds) if k == _USER_DEFINED]
    )
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, kinds) if k == _CONTROL]
    )

    bos_id = meta_value(metadata, "tokenizer.ggml.bos_token_id")
    eos_id = meta_value(metadata, "tokenizer.ggml.eos_token_id")
    pad_id = meta_value(metadata, "tokenizer.ggml.padding_token_id")
    # llama.cpp's default for BPE vocabularies is not to add BOS.
    if bos_id is not None and meta_value(metadata, "tokenizer.ggml.add_bos_token", False):
        backend.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos_id]} $A", special_tokens=[(tokens[bos_id], bos_id)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        chat_template=meta_value(metadata, "tokenizer.chat_template"),
        bos_token=tokens[bos_id] if bos_id is not None else None,
        eos_token=tokens[eos_id] if eos_id is not None else None,
        pad_token=tokens[pad_id] if pad_id is not None else None,
    )


def eog_token_ids(metadata: dict[str, Any]) -> set[int]:
    """Token ids that end generation, chosen as llama.cpp chooses them."""
    # llama.cpp matches on the text alone, whatever the token's type.
    ids = {i for i, text in enumerate(metadata["tokenizer.ggml.tokens"]) if text in _EOG_TEXTS}
    for key in ("eos", "eot", "eom"):
        value = meta_value(metadata, f"tokenizer.ggml.{key}_token_id")
        if value is not None:
            ids.add(int(value))
    return ids


def _token_types(metadata: dict[str, Any], count: int) -> list[int]:
    kinds = metadata.get("tokenizer.ggml.token_type")
    return kinds.tolist() if kinds is not None else [1] * count
