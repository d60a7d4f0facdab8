"""FLOP counts against a count written out by hand (the model's linear weights and its attended pairs)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from optim_hunter.analysis import flops

LAYERS, HEADS, D_HEAD = 2, 4, 8


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=LAYERS, hidden_size=HEADS * D_HEAD, num_attention_heads=HEADS,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128, vocab_size=100,
                         attn_implementation="sdpa")
    return LlamaForCausalLM(config).eval()


def by_hand(model, tokens: int, pairs: int) -> int:
    """2 FLOPs per weight of every linear layer (the unembedding too) per token, and per attended
    (query, key) pair 2 d_head for the score and 2 d_head for the value, every head of every layer."""
    weights = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 2 * tokens * weights + LAYERS * HEADS * pairs * 4 * D_HEAD


def test_prompt_pass_counts_causal_attention(llama):
    tokens = torch.randint(0, 100, (1, 20))
    with torch.inference_mode():
        _, counted = flops.counted(lambda: llama(tokens))
    assert counted == by_hand(llama, 20, 20 * 21 // 2)


def test_cached_step_counts_every_past_key(llama):
    tokens = torch.randint(0, 100, (2, 12))
    cache = DynamicCache(config=llama.config)
    with torch.inference_mode():
        llama(tokens, past_key_values=cache, use_cache=True)
        _, counted = flops.counted(lambda: llama(tokens[:, :1], past_key_values=cache, use_cache=True))
    assert counted == 2 * by_hand(llama, 1, 13)  # two rows, each query sees 12 cached keys and itself


@pytest.mark.parametrize("queries,keys", [(1, 1), (5, 5), (3, 7), (7, 3), (0, 4)])
@pytest.mark.parametrize("causal", [True, False])
def test_attended_pairs_match_the_mask(queries, keys, causal):
    mask = torch.ones(queries, keys, dtype=torch.bool)
    if causal:
        mask = mask.tril()  # what F.scaled_dot_product_attention(is_causal=True) keeps
    assert flops.attended_pairs(queries, keys, causal) == int(mask.sum())


def test_attended_pairs_refuses_negative_sizes():
    with pytest.raises(ValueError, match="queries and keys"):
        flops.attended_pairs(-1, 3, True)


# --- the tally of a chapter's passes ---------------------------------------------------------------


def test_tally_equals_the_counted_flops_of_prompt_passes_and_steps(llama):
    tally = flops.Tally(written_at=float("inf"))  # never written: no log set
    model = LlamaForCausalLM(llama.config).eval()
    model.load_state_dict(llama.state_dict())
    flops.watch(model, tally)
    tokens = torch.randint(0, 100, (3, 10))
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        _, prompt = flops.counted(lambda: model(tokens, past_key_values=cache, use_cache=True))
        _, step = flops.counted(lambda: model(tokens[:, :1], past_key_values=cache, use_cache=True))
    assert tally.passes == 2 and tally.flops == prompt + step


def test_tally_of_a_bridge_counts_its_passes_causally(tiny_hf_models):
    from optim_hunter import zoo
    from optim_hunter.core import twins

    bridge = zoo.load(f"hf:{tiny_hf_models['llama']}")
    twin = twins.fast_twin(bridge)
    tokens = torch.randint(0, 100, (2, 9))
    before = (flops.TALLY.flops, flops.TALLY.passes)
    with torch.inference_mode():
        bridge(tokens)  # the hooked path: eager attention computes every pair, the tally counts the causal ones
    weights = sum(m.in_features * m.out_features for m in twin.modules() if isinstance(m, torch.nn.Linear))
    config = twin.config
    attention = config.num_hidden_layers * config.num_attention_heads * (9 * 10 // 2) * 4 * (
        config.hidden_size // config.num_attention_heads)
    assert flops.TALLY.passes - before[1] == 1
    assert flops.TALLY.flops - before[0] == 2 * (2 * 9 * weights + attention)


def test_tally_is_written_to_the_log(tmp_path, monkeypatch):
    log = tmp_path / "chapter.flops.json"
    monkeypatch.setenv(flops.LOG_ENV, str(log))
    tally = flops.Tally()
    tally.add(1_000, passes=1)  # first add: written at once
    tally.add(500, passes=1)  # within WRITE_EVERY_S: kept for later
    assert json.loads(log.read_text()) == {"flops": 1_000, "passes": 1}
    tally.write()
    assert json.loads(log.read_text()) == {"flops": 1_500, "passes": 2}
    assert [p.name for p in tmp_path.iterdir()] == [log.name]  # no temporary left behind


def test_a_call_the_tally_cannot_read_is_left_uncounted_not_refused(llama):
    tally = flops.Tally(written_at=float("inf"))
    model = LlamaForCausalLM(llama.config).eval()
    flops.watch(model, tally)
    embeds = model.get_input_embeddings()(torch.randint(0, 100, (1, 4)))
    with torch.inference_mode():
        model(inputs_embeds=embeds)  # no token ids: the embeddings' shape is read instead
    assert tally.passes == 1
    assert flops._cached_length(object()) is None  # a cache of no known kind: the pass goes uncounted
