"""A tiny random-weight llama model as a GGUF file, for the tests and benches of the local LLM.

No real weights are available offline, so the tests write one with the ``gguf`` package: a
SentencePiece-style vocabulary of English words (with the byte tokens and ``<|im_start|>`` /
``<|im_end|>`` control tokens), random float32 weights and a ChatML chat template in its
metadata. llama.cpp loads it in milliseconds; it answers a deterministic word salad.

Only the rows of the output matrix that belong to words and punctuation are non-zero: an
answer is words (valid UTF-8, speakable), and it never ends by itself (the end-of-turn token
is never the likeliest): ``max_tokens`` bounds it, and the cancellation tests always have an
answer that is still being written.

    python tests/tiny_llm.py tiny.gguf [--dims 64 --layers 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gguf
import numpy as np

__all__ = ["CHAT_TEMPLATE", "WORDS", "write_tiny_llama"]

#: ChatML, as Qwen and many small instruction models use it
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

WORDS = (  # noqa: SIM905 (one string reads better than 80 quoted words)
    "the a hello world light sky sun moon star time day night good morning water tree "
    "house city music voice friend question answer weather today tomorrow yes no maybe "
    "please thank you I we they it is are was be have can will small big warm cold blue "
    "green red bright quiet happy river mountain road garden window story song dream "
    "capital france paris timer minute ten set what where when how why very just now"
).split()
PUNCTUATION = (".", ",", "!", "?")

_UNK, _BOS, _EOS = 0, 1, 2


def _vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [
        gguf.TokenType.UNKNOWN,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
    ]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    pieces = [f"\u2581{w}" for w in WORDS] + list(WORDS) + list(PUNCTUATION) + ["\u2581", "\n"]
    pieces += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    seen = set(tokens)
    for piece in pieces:
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            types.append(gguf.TokenType.NORMAL)
    # longer pieces first: SentencePiece merges by score
    scores = [0.0] * 261 + [float(len(t)) - 20.0 for t in tokens[261:]]
    return tokens, scores, [int(t) for t in types]


def write_tiny_llama(
    path: str | Path,
    *,
    dims: int = 64,
    layers: int = 2,
    heads: int = 4,
    context: int = 2048,
    seed: int = 0,
    chat_template: str | None = CHAT_TEMPLATE,
) -> Path:
    """Write the model to ``path`` (its parent must exist) and return the path."""
    path = Path(path)
    tokens, scores, types = _vocab()
    n_vocab, ff = len(tokens), dims * 2
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("echokit-fast tiny random llama")
    writer.add_context_length(context)
    writer.add_embedding_length(dims)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(dims // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(_UNK)
    writer.add_bos_token_id(_BOS)
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    output = weight(n_vocab, dims) * 4.0  # sharper logits: a less uniform word salad
    # the answer is words and punctuation: every other token's logit (the end of the turn's
    # too) is 0, below the best of the others
    said = {i for i, t in enumerate(tokens) if t.startswith("\u2581") and len(t) > 1}
    said |= {tokens.index(p) for p in PUNCTUATION}
    output[[i for i in range(n_vocab) if i not in said]] = 0.0
    writer.add_tensor("token_embd.weight", weight(n_vocab, dims))
    writer.add_tensor("output_norm.weight", np.ones(dims, dtype=np.float32))
    writer.add_tensor("output.weight", output)
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(dims, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weight(dims, dims))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(dims, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(ff, dims))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(ff, dims))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(dims, ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path")
    parser.add_argument("--dims", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_tiny_llama(args.path, dims=args.dims, layers=args.layers, seed=args.seed)


if __name__ == "__main__":
    main()
