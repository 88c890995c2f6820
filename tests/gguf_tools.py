"""Build GGUF files in tests: a tiny transformers Llama converted to GGUF, and GGUF copies with other RoPE metadata.

llama.cpp's converter (``convert_hf_to_gguf.py``) is not on PyPI; this is the part of it a Llama needs, so tests
can run llama.cpp and transformers on the very same weights, and give a GGUF the RoPE scaling keys that the
16K (linear) and 64K (YaRN) Chinese-Alpaca-2 files carry.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

#: ``with_rope_metadata`` keyword → (``gguf.Keys.Rope`` attribute, value type name), the types that
#: ``GGUFWriter.add_rope_*`` write and llama.cpp reads.
ROPE_FIELDS: dict[str, tuple[str, str]] = {
    "scaling_type": ("SCALING_TYPE", "STRING"),  # "none", "linear", "yarn"
    "scaling_factor": ("SCALING_FACTOR", "FLOAT32"),
    "original_context_length": ("SCALING_ORIG_CTX_LEN", "UINT32"),
    "attn_factor": ("SCALING_ATTN_FACTOR", "FLOAT32"),  # llama.cpp multiplies its YaRN mscale by it
    "finetuned": ("SCALING_FINETUNED", "BOOL"),
    "freq_base": ("FREQ_BASE", "FLOAT32"),
}


def rope_metadata(arch: str, **keys: Any) -> dict[str, tuple[Any, Any]]:
    """Full GGUF key → (value, ``GGUFValueType``) for ``ROPE_FIELDS`` keywords; a ``None`` value means "remove"."""
    import gguf

    unknown = set(keys) - set(ROPE_FIELDS)
    if unknown:
        raise TypeError(f"unknown RoPE keys {sorted(unknown)}; known: {sorted(ROPE_FIELDS)}")
    out: dict[str, tuple[Any, Any]] = {}
    for name, value in keys.items():
        attr, vtype = ROPE_FIELDS[name]
        out[getattr(gguf.Keys.Rope, attr).format(arch=arch)] = (value, gguf.GGUFValueType[vtype])
    return out


def hf_rope_keys(rope: dict[str, Any]) -> dict[str, Any]:
    """transformers' ``rope_parameters`` → ``with_rope_metadata`` keywords, as convert_hf_to_gguf.py maps them."""
    kind = rope.get("rope_type", rope.get("type", "default"))
    keys: dict[str, Any] = {"freq_base": float(rope.get("rope_theta", 10000.0))}
    if kind == "linear":
        keys |= {"scaling_type": "linear", "scaling_factor": float(rope["factor"])}
    elif kind == "yarn":
        keys |= {
            "scaling_type": "yarn",
            "scaling_factor": float(rope["factor"]),
            "original_context_length": int(rope["original_max_position_embeddings"]),
        }
        if rope.get("attention_factor") is not None:
            keys["attn_factor"] = float(rope["attention_factor"])
    elif kind != "default":
        raise ValueError(f"rope_type {kind!r} is not handled by this test converter")
    return keys


def permute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k rows from transformers' rotate-half layout to llama.cpp's adjacent pairs (convert_hf_to_gguf)."""
    rows = weights.shape[0]
    return weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def convert_llama_to_gguf(hf_dir: Path, out_path: Path, dtype: Literal["f32", "f16"] = "f32") -> Path:
    """Write the transformers Llama in ``hf_dir`` (weights, hparams, RoPE scaling, vocabulary) as a GGUF.

    Matrices are stored in ``dtype``; norms stay float32 as llama.cpp's converter keeps them. The vocabulary
    is written as a plain SentencePiece-style ("llama") token list, which is all llama.cpp needs to load it:
    tests feed token ids directly.
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file
    from transformers import AutoConfig, AutoTokenizer

    hf_dir = Path(hf_dir)
    config = AutoConfig.from_pretrained(hf_dir)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    weights: dict[str, np.ndarray] = {}
    for shard in sorted(hf_dir.glob("*.safetensors")):
        weights |= load_file(shard)
    if "lm_head.weight" not in weights:  # tied embeddings
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]

    n_head = config.num_attention_heads
    n_kv_head = config.num_key_value_heads or n_head
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    rope = dict(getattr(config, "rope_parameters", None) or {})
    rope.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))

    writer = gguf.GGUFWriter(out_path, arch="llama")
    writer.add_name(hf_dir.name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv_head)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    for key, (value, vtype) in rope_metadata("llama", **hf_rope_keys(rope)).items():
        writer.add_key_value(key, value, vtype)

    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    special = set(tokenizer.all_special_ids)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([text for text, _ in vocab])
    writer.add_token_scores([0.0] * len(vocab))
    writer.add_token_types([
        gguf.TokenType.UNKNOWN if i == tokenizer.unk_token_id
        else gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
        for _, i in vocab
    ])
    for token_id, add in (
        (tokenizer.bos_token_id, writer.add_bos_token_id),
        (tokenizer.eos_token_id, writer.add_eos_token_id),
        (tokenizer.unk_token_id, writer.add_unk_token_id),
        (tokenizer.pad_token_id, writer.add_pad_token_id),
    ):
        if token_id is not None:
            add(token_id)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, data in weights.items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"no GGUF name for tensor {hf_name}")
        data = data.astype(np.float32)
        if hf_name.endswith("q_proj.weight"):
            data = permute_qk(data, n_head)
        elif hf_name.endswith("k_proj.weight"):
            data = permute_qk(data, n_kv_head)
        if dtype == "f16" and data.ndim > 1:
            data = data.astype(np.float16)
        writer.add_tensor(name, np.ascontiguousarray(data))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(out_path)


def with_rope_metadata(src_gguf: Path, dst: Path, **keys: Any) -> Path:
    """Copy ``src_gguf`` to ``dst`` with RoPE keys set (``ROPE_FIELDS`` keywords) or removed (``None``).

    Tensors are copied as raw bytes with their ggml type, so quantized files (e.g. SmolLM2 Q4_1) keep
    bit-identical weights: only the metadata differs between the two files.
    """
    import gguf

    reader = gguf.GGUFReader(src_gguf, "r")
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    changes = rope_metadata(arch, **keys)
    writer = gguf.GGUFWriter(dst, arch=arch, endianess=reader.endianess)
    alignment = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()

    for field in reader.fields.values():
        # The writer adds general.architecture itself; GGUF.* are the reader's virtual header fields.
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF.") or field.name in changes:
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub_type)
    for key, (value, vtype) in changes.items():
        if value is not None:
            writer.add_key_value(key, value, vtype)

    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    return Path(dst)
