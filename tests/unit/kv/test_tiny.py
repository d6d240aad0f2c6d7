"""Tiny models: real architectures that the Auto classes load offline, a real tokenizer, a chat template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from memory_store.kv.tiny import make_tiny_model, tiny_model_is_complete


def test_llama_loads_with_the_auto_classes_and_applies_its_chat_template(tiny_llama: tuple[Any, Any]) -> None:
    model, tok = tiny_llama
    assert model.config.model_type == "llama"
    assert model.config.vocab_size >= len(tok)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is MemOS?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nWhat is MemOS?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level BPE: lossless
    assert tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), model.config.vocab_size)


def test_any_text_encodes_without_unknown_tokens(tiny_llama: tuple[Any, Any]) -> None:
    _, tok = tiny_llama
    text = "Zürich, 東京 and emoji 🙂 — all bytes survive."
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_qwen2_is_a_qwen2(tiny_qwen2_dir: Path) -> None:
    assert AutoConfig.from_pretrained(tiny_qwen2_dir).model_type == "qwen2"
    assert tiny_model_is_complete(tiny_qwen2_dir)


def test_same_arguments_give_the_same_model(tmp_path: Path, tiny_llama_dir: Path) -> None:
    again = make_tiny_model(tmp_path / "again", arch="llama", layers=2, hidden=64)
    first, second = load_file(tiny_llama_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    tok_a = json.loads((tiny_llama_dir / "tokenizer.json").read_text())
    tok_b = json.loads((again / "tokenizer.json").read_text())
    assert tok_a["model"] == tok_b["model"]
    other_seed = load_file(
        make_tiny_model(tmp_path / "seed1", layers=2, hidden=64, seed=1) / "model.safetensors"
    )
    assert not torch.equal(first["model.embed_tokens.weight"], other_seed["model.embed_tokens.weight"])


def test_sizes_are_as_asked_and_an_existing_model_is_kept(tmp_path: Path) -> None:
    path = make_tiny_model(tmp_path / "m", layers=3, hidden=96, heads=6, kv_heads=2, max_positions=512)
    model = AutoModelForCausalLM.from_pretrained(path)
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (3, 96, 6)
    assert (config.num_key_value_heads, config.max_position_embeddings) == (2, 512)
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert make_tiny_model(path, layers=3, hidden=96, heads=6, kv_heads=2) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert AutoTokenizer.from_pretrained(path).chat_template


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_tiny_model(tmp_path / "x", hidden=65, heads=4)
    with pytest.raises(ValueError):
        make_tiny_model(tmp_path / "y", arch="gpt9")  # type: ignore[arg-type]
    assert not (tmp_path / "y").exists()
