"""A tiny random-weight llama model in GGUF, made on the spot, so a real
llama.cpp server can run offline in tests: no weights are downloaded, the
vocabulary is the llama SPM one that ships in llama.cpp's source tree
(``models/ggml-vocab-llama-spm.gguf``). It talks gibberish; it is only for
checking the wire format of a real OpenAI-compatible server."""

from __future__ import annotations

import sys
from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tiny_llama(llama_cpp: Path, out: Path, n_embd: int = 64, n_layer: int = 2) -> Path:
    """Write the model to ``out`` using the gguf-py of the ``llama_cpp`` tree."""
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    import gguf
    import numpy as np

    vocab = gguf.GGUFReader(str(llama_cpp / "models" / "ggml-vocab-llama-spm.gguf"))
    writer = gguf.GGUFWriter(str(out), "llama")
    n_vocab = 0
    for f in vocab.fields.values():
        if not f.name.startswith("tokenizer."):
            continue
        kind = f.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            if f.types[-1] == gguf.GGUFValueType.STRING:
                values = [bytes(f.parts[i]).decode("utf-8", "replace") for i in f.data]
            else:
                values = [f.parts[i].tolist()[0] for i in f.data]
            if f.name == "tokenizer.ggml.tokens":
                n_vocab = len(values)
            writer.add_array(f.name, values)
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(f.name, bytes(f.parts[-1]).decode())
        elif kind == gguf.GGUFValueType.UINT32:
            writer.add_uint32(f.name, int(f.parts[-1][0]))
        elif kind == gguf.GGUFValueType.BOOL:
            writer.add_bool(f.name, bool(f.parts[-1][0]))
    n_head, n_ff = 4, 2 * n_embd
    writer.add_chat_template(CHATML)
    writer.add_context_length(512)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    rng = np.random.default_rng(0)

    def weights(*shape: int):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    ones = np.ones(n_embd, np.float32)
    writer.add_tensor("token_embd.weight", weights(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", weights(n_vocab, n_embd))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        for name in ("q", "k", "v", "output"):
            writer.add_tensor(f"blk.{i}.attn_{name}.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weights(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
