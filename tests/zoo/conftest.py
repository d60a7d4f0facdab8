"""Fixtures for the zoo tests: a private cache, tiny configurations, tiny offline HF models."""

from __future__ import annotations

import pytest

from optim_hunter import zoo

STANDARD_HOOKS = (
    "hook_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.ln1.hook_normalized",
    "blocks.0.attn.hook_q",
    "blocks.0.attn.hook_k",
    "blocks.0.attn.hook_v",
    "blocks.0.attn.hook_attn_scores",
    "blocks.0.attn.hook_pattern",
    "blocks.0.attn.hook_z",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_resid_mid",
    "blocks.0.mlp.hook_pre",
    "blocks.0.mlp.hook_post",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
    "blocks.1.hook_resid_post",
    "ln_final.hook_normalized",
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """OPTIM_HUNTER_CACHE in a temp folder, and every zoo family shrunk to its tiny config."""
    monkeypatch.setenv("OPTIM_HUNTER_CACHE", str(tmp_path / "cache"))
    for name in zoo.names():
        module = zoo.family(name)
        monkeypatch.setattr(module, "config", lambda profile=None, m=module: m.tiny_config())
    return tmp_path / "cache"


def _byte_tokenizer(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = ["Feature 0: 12.50\nOutput: 3.25\n\n", "(1, 5)\n(2, 7)\n", "the cat sat on the mat"] * 20
    backend.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


@pytest.fixture(scope="session")
def tiny_hf_models(tmp_path_factory):
    """Randomly initialised GPT-2 and Llama models with a BPE tokenizer, saved offline."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("hf")
    tokenizer = _byte_tokenizer(root)
    vocab = len(tokenizer)
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    models = {
        "gpt2": GPT2LMHeadModel(
            GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=128, vocab_size=vocab, **special)
        ),
        "llama": LlamaForCausalLM(
            LlamaConfig(
                num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=64, max_position_embeddings=128, vocab_size=vocab, **special,
            )
        ),
    }
    paths = {}
    for name, model in models.items():
        paths[name] = root / name
        model.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    return paths
