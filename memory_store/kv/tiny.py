"""Tiny random-weight causal LMs of real architectures (Llama, Qwen2), built offline with a real tokenizer.

``make_tiny_model(dir)`` writes a folder that ``AutoModelForCausalLM.from_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)`` load with no network: weights from a fixed seed, a byte-level BPE
tokenizer trained with ``tokenizers`` on a small built-in corpus (any text encodes; nothing is unknown),
and a ChatML chat template, so ``apply_chat_template`` works. Same arguments, same bytes.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

__all__ = ["TINY_CHAT_TEMPLATE", "TinyArch", "make_tiny_model", "tiny_model_is_complete"]

logger = logging.getLogger(__name__)

TinyArch = Literal["llama", "qwen2"]

TINY_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set content = message['content'] -%}"
    "{%- else -%}{%- set content = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('\\n') -%}{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
"""ChatML: ``<|im_start|>role\\ncontent<|im_end|>\\n`` per message, then ``<|im_start|>assistant\\n``."""

_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_MARKER = "memos-tiny-model.json"

_CORPUS = """\
The user asked what MemOS is. MemOS is a memory operating system for large language models.
It keeps plaintext memories, activation memories and parametric memories in isolated memory cubes.
A memory cube belongs to a user; it can be shared with other users who may then read it.
Every conversation lands first on an ordered log, and stream processors derive memories from it.
Search embeds the query once, asks the vector index, the keyword index and the graph, and fuses the hits.
A key value cache of important memories lets the chat model start answering faster.
I have planned to travel to Guangzhou during the summer vacation. Which chain hotels are available?
You can consider 7 Days Inn, Ji Hotel or Hilton. I will choose 7 Days Inn.
I like playing football on Saturday mornings with my friends from work.
My favourite food is spicy noodles, and I drink green tea every afternoon.
The meeting with the design team moved from Tuesday to Thursday at three o'clock.
Remember that the secret code word is PINEAPPLE and that the door code is 4721.
Tell me a joke. Why did the scarecrow win an award? Because he was outstanding in his field.
Please read this file, summarize the key points, and provide a final conclusion.
The root cause was poor contact at the negative terminal of the power supply inside the cabinet.
Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July
August September October November December morning afternoon evening night today tomorrow yesterday
one two three four five six seven eight nine ten hundred thousand first second third last next
what when where why who how which is are was were be been have has had do does did will would can could
the a an and or but if then because so of to in on at by for with from about into over after before
I you he she it we they me him her us them my your his its our their this that these those here there
user assistant system tool memory memories cache query answer question search add delete update
"""


def _train_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    return tok


def _model_config(arch: TinyArch, *, vocab: int, ids: dict[str, int], **dims: Any) -> Any:
    common: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": dims["hidden"],
        "intermediate_size": dims["intermediate"],
        "num_hidden_layers": dims["layers"],
        "num_attention_heads": dims["heads"],
        "num_key_value_heads": dims["kv_heads"],
        "max_position_embeddings": dims["max_positions"],
        "initializer_range": dims["initializer_range"],
        "tie_word_embeddings": False,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    if arch == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(**common, use_sliding_window=False)
    raise ValueError(f"unknown tiny architecture {arch!r}; expected 'llama' or 'qwen2'")


def tiny_model_is_complete(directory: str | Path) -> bool:
    """True when ``directory`` holds a finished tiny model (its marker file is written last)."""
    return (Path(directory) / _MARKER).is_file()


def make_tiny_model(
    directory: str | Path,
    *,
    arch: TinyArch = "llama",
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int | None = None,
    intermediate: int | None = None,
    vocab_size: int = 1024,
    max_positions: int = 8192,
    initializer_range: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a random-weight causal LM with tokenizer and chat template to ``directory``; return its path.

    Deterministic: the same arguments give the same weights and tokenizer. ``vocab_size`` is the
    tokenizer's target (the small corpus may yield fewer merges; the model's embedding covers the
    tokenizer exactly, rounded up to a multiple of 64). ``initializer_range`` defaults above the usual
    0.02 so that logits are far from uniform and greedy decoding has no near-ties. An existing complete
    model is kept unless ``overwrite``. The folder appears whole (built aside, then renamed).
    Raises ValueError for an unknown ``arch`` or inconsistent sizes.
    """
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    target = Path(directory).expanduser()
    if tiny_model_is_complete(target) and not overwrite:
        return target
    kv_heads = kv_heads or heads
    if hidden % heads or heads % kv_heads:
        raise ValueError(
            f"hidden={hidden!r} must divide by heads={heads!r}, and heads by kv_heads={kv_heads!r}"
        )
    dims = {
        "hidden": hidden,
        "intermediate": intermediate or hidden * 2 + hidden // 2,
        "layers": layers,
        "heads": heads,
        "kv_heads": kv_heads,
        "max_positions": max_positions,
        "initializer_range": initializer_range,
    }
    backend = _train_tokenizer(vocab_size)
    ids = {t: backend.token_to_id(t) for t in _SPECIAL}
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        model_max_length=max_positions,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    vocab = -(-len(tokenizer) // 64) * 64
    config = _model_config(arch, vocab=vocab, ids=ids, **dims)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        marker = {"arch": arch, "seed": seed, "vocab_size": vocab, **dims}
        (staging / _MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True), encoding="utf-8")
        if target.exists():
            if not overwrite and tiny_model_is_complete(target):  # another process finished first
                return target
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "tiny_model_written path=%s arch=%s layers=%d hidden=%d vocab=%d", target, arch, layers, hidden, vocab
    )
    return target
