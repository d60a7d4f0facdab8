"""ICL measurements against independent computations on small models and synthetic curves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from optim_hunter import zoo
from optim_hunter.analysis import heads, intervals
from optim_hunter.chapters.induction_heads import (
    claim_specs,
    icl_metrics,
    interventions,
    markov_ablations,
    phase_change,
    resampling,
    seed_verdicts,
    snapshots,
    text_model,
)
from optim_hunter.report import claims
from optim_hunter.zoo import induction


def test_scaled_indices_follow_the_seed():
    assert icl_metrics.scaled_indices(512) == (50, 500)
    assert icl_metrics.scaled_indices(128) == (12, 125)


def test_icl_score_and_sensitivity():
    loss = np.arange(20, dtype=float)[None].repeat(3, 0) * -0.1  # falls 0.1 per index
    assert icl_metrics.icl_score(loss, 2, 12) == pytest.approx([-1.0] * 3)
    assert icl_metrics.icl_score(loss, 2, 12, half_width=2) == pytest.approx([-1.0] * 3)
    table = icl_metrics.icl_sensitivity(loss[0], [(1, 5), (2, 18)])
    assert table[(1, 5)] == pytest.approx(-0.4) and table[(2, 18)] == pytest.approx(-1.6)


def test_log_index_derivative_of_a_log_linear_curve():
    x = np.log(np.arange(1, 41))
    loss = 2.0 - 0.3 * x
    np.testing.assert_allclose(icl_metrics.log_index_derivative(loss), -0.3, atol=1e-9)


def test_phase_change_window_finds_a_sigmoid_in_log_steps():
    steps = np.unique(np.geomspace(1, 10_000, 120).astype(int))
    scores = -0.5 / (1 + np.exp(-(np.log10(steps) - 3.0) * 8))  # falls around step 1000
    window = icl_metrics.phase_change_window(steps, scores, smoothing=1)
    assert window.contains(1000) and 500 < window.peak < 2000
    assert window.drop == pytest.approx(0.5 * 0.76, abs=0.1)  # half-rate points of a logistic
    assert window.total_drop > 0.45
    assert icl_metrics.crossing_step(steps, -scores) == pytest.approx(1000, rel=0.15)
    assert icl_metrics.crossing_step(steps, np.ones(len(steps))) is None


def test_pca_matches_the_covariance_eigenvectors():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 12)), rng.normal(size=(5, 12)) + 1.0
    proj, explained = icl_metrics.per_token_loss_pca({"a": a, "b": b}, n_components=2)
    stacked = np.concatenate([a, b])
    centred = stacked - stacked.mean(0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    top = vectors[:, ::-1][:, :2]
    theirs = centred @ top
    ours = np.concatenate([proj["a"], proj["b"]])
    for c in range(2):  # equal up to sign
        assert np.allclose(ours[:, c], theirs[:, c], atol=1e-8) or np.allclose(ours[:, c], -theirs[:, c], atol=1e-8)
    np.testing.assert_allclose(explained, values[::-1][:2] / values.sum(), atol=1e-10)


def test_before_after_attribution():
    before, after = np.array([3.0, 2.0, 1.0]), np.array([2.0, 2.0, 0.0])
    assert interventions.before_after_attribution(before - after, before, after) == pytest.approx(1.0)
    assert interventions.before_after_attribution(np.array([0.0, 5.0, 0.0]), before, after) == pytest.approx(0.0)


def _small(smeared=False):
    cfg = induction.make_config(2, smeared, steps=3, snapshots=2, d_model=16, n_heads=2, n_ctx=20, batch_size=4)
    module = induction.build_model(cfg, 1)
    return cfg, module, induction.hooked(module.state_dict(), cfg, "t")


def _manual_losses(module, tokens, frozen=None, ablate=None):
    """An independent forward of the attention-only native model (no LayerNorm folding, explicit
    softmax), zeroing head `ablate` = (layer, head) and optionally using given patterns."""
    m = module.native
    batch, seq = tokens.shape
    h = m.tok_embed(tokens) + m.pos.weight[:seq]
    patterns = []
    mask = torch.tril(torch.ones(seq, seq, dtype=torch.bool))
    for l, block in enumerate(m.layers):
        attn = block.attn
        x = block.ln1(h)
        q = attn.q(x).view(batch, seq, attn.n_heads, -1)
        k = attn.k(x).view(batch, seq, attn.n_heads, -1)
        v = attn.v(x).view(batch, seq, attn.n_heads, -1)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / attn.scale
        pattern = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
        if frozen is not None:
            pattern = frozen[l]
        patterns.append(pattern)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        if ablate is not None and ablate[0] == l:
            z = z.clone()
            z[:, :, ablate[1]] = 0
        h = h + attn.o(z.reshape(batch, seq, -1))
    logits = m.head(m.ln_out(h))
    return icl_metrics.token_losses(logits, tokens), patterns


@torch.no_grad()
def test_full_and_pattern_preserving_ablations_match_a_manual_forward():
    cfg, module, bridge = _small()
    tokens = induction.markov_batch(3, cfg.n_ctx, cfg.n_states, 2)
    clean, patterns = _manual_losses(module, tokens)
    np.testing.assert_allclose(icl_metrics.token_losses(bridge(tokens), tokens), clean, atol=1e-5)
    for layer, head in [(0, 1), (1, 0)]:
        full, _ = _manual_losses(module, tokens, ablate=(layer, head))
        kept, _ = _manual_losses(module, tokens, frozen=patterns, ablate=(layer, head))
        for preserve, expected in ((False, full), (True, kept)):
            ours = interventions.ablated_losses(bridge, tokens, layer, head, preserve_patterns=preserve)
            np.testing.assert_allclose(ours, expected, atol=1e-5)
    # a layer-0 head changes layer-1 patterns: the two ablations differ there
    assert not np.allclose(
        interventions.ablated_losses(bridge, tokens, 0, 0, preserve_patterns=False),
        interventions.ablated_losses(bridge, tokens, 0, 0, preserve_patterns=True), atol=1e-6,
    )


@torch.no_grad()
def test_head_ablations_table_and_head_scores():
    cfg, module, bridge = _small(smeared=True)
    tokens = induction.markov_batch(4, cfg.n_ctx, cfg.n_states, 3)
    table = interventions.head_ablations(bridge, tokens, 2, 15)
    clean = icl_metrics.token_losses(bridge(tokens), tokens)
    assert table.clean_icl == pytest.approx(float(icl_metrics.icl_score(clean.mean(0), 2, 15)))
    direct = interventions.ablated_losses(bridge, tokens, 1, 1, preserve_patterns=False)
    assert table.icl_full[1, 1] == pytest.approx(float(icl_metrics.icl_score(direct.mean(0), 2, 15)))
    np.testing.assert_allclose(table.delta_full[1, 1], (direct - clean).reshape(-1), atol=1e-6)
    # in the last layer nothing reads the patterns downstream: both ablations agree
    np.testing.assert_allclose(table.delta_full[1], table.delta_preserved[1], atol=1e-5)
    scores = snapshots.head_scores(bridge, tokens)
    for name in ("prefix_matching", "copying", "previous_token", "k_composition"):
        assert scores[name].shape == (2, 2)
    assert np.isnan(scores["k_composition"][0]).all() and np.isfinite(scores["k_composition"][1]).all()
    # previous-token score, independently: mean attention from i to i-1 in the cache
    _, cache = bridge.run_with_cache(tokens)
    pattern = cache["blocks.0.attn.hook_pattern"]
    manual = torch.stack([pattern[:, h].diagonal(-1, -2, -1).mean() for h in range(2)]).numpy()
    np.testing.assert_allclose(scores["previous_token"][0], manual, atol=1e-6)


class _InductionOracle:
    """Logits that put everything on the token that followed the current token's previous
    occurrence (uniform where it has none): a perfect induction head, written out."""

    def __init__(self, d_vocab: int):
        self.d_vocab = d_vocab

    def __call__(self, tokens):
        batch, pos = tokens.shape
        logits = torch.zeros(batch, pos, self.d_vocab)
        for b in range(batch):
            seq = tokens[b].tolist()
            for i in range(pos):
                earlier = [j for j in range(i) if seq[j] == seq[i]]
                if earlier:
                    logits[b, i, seq[earlier[-1] + 1]] = 30.0
        return logits


@pytest.mark.parametrize("bos", [None, 0])
def test_repeat_loss_drop_of_a_perfect_induction_head_and_of_a_constant_model(bos):
    vocab = 50
    drop = snapshots.repeat_loss_drop(_InductionOracle(vocab), vocab, length=8, repeats=3, batch=3, bos=bos)
    assert drop == pytest.approx(np.log(vocab), abs=1e-3)  # first copy uniform, repeats exact
    constant = lambda tokens: torch.zeros(*tokens.shape, vocab)  # noqa: E731
    assert snapshots.repeat_loss_drop(constant, vocab, length=8, bos=bos) == pytest.approx(0.0, abs=1e-6)


def test_head_scores_with_a_bos_token():
    cfg, _, bridge = _small()
    tokens = induction.markov_batch(2, cfg.n_ctx, cfg.n_states, 4)
    with_bos = snapshots.head_scores(bridge, tokens, bos=0)
    without = snapshots.head_scores(bridge, tokens)
    assert with_bos["prefix_matching"].shape == (2, 2)
    assert not np.allclose(with_bos["prefix_matching"], without["prefix_matching"])
    np.testing.assert_allclose(with_bos["previous_token"], without["previous_token"])


def _shrink(monkeypatch, name, cfg):
    """Give zoo family `name` the configuration `cfg` in every profile, for one test."""
    fam = dataclasses.replace(zoo.family(name), config=lambda profile=None: cfg)
    monkeypatch.setitem(zoo._FAMILIES, name, fam)


def test_snapshot_measurements_match_direct_computation(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTIM_HUNTER_CACHE", str(tmp_path))
    name = "attn-only-2l"
    cfg = induction.make_config(2, False, steps=6, snapshots=3, d_model=16, n_heads=2, n_ctx=20, batch_size=4)
    _shrink(monkeypatch, name, cfg)
    tokens = induction.markov_batch(5, cfg.n_ctx, cfg.n_states, 11)
    steps = zoo.snapshots(name, "smoke")
    out = snapshots.snapshot_measurements(name, tokens, profile="smoke", early=2, late=15, half_width=1,
                                    head_steps=[steps[0], steps[-1]])
    assert list(out["steps"]) == steps and out["by_index"].shape == (3, cfg.n_ctx - 1)
    assert list(out["head_steps"]) == [steps[0], steps[-1]] and out["prefix_matching"].shape == (2, 2, 2)
    final = zoo.load(name, "smoke", progress=False)
    direct = icl_metrics.token_losses(final(tokens), tokens).mean(0)
    np.testing.assert_allclose(out["by_index"][-1], direct, atol=1e-5)
    np.testing.assert_allclose(out["icl"], icl_metrics.icl_score(out["by_index"], 2, 15, 1))
    scores = snapshots.head_scores(final, tokens[:16])
    np.testing.assert_allclose(out["prefix_matching"][-1], scores["prefix_matching"], atol=1e-6)
    subset = snapshots.snapshot_measurements(name, tokens, profile="smoke", early=2, late=15, half_width=1,
                                       steps=[steps[-1]], head_steps=[])
    assert list(subset["steps"]) == [steps[-1]] and "prefix_matching" not in subset
    np.testing.assert_allclose(subset["icl"], out["icl"][-1:])
    with pytest.raises(ValueError, match="not among the snapshots"):
        snapshots.snapshot_measurements(name, tokens, profile="smoke", early=2, late=15, head_steps=[10_000])
    with pytest.raises(ValueError, match="not among the snapshots"):
        snapshots.snapshot_measurements(name, tokens, profile="smoke", early=2, late=15, steps=[10_000])


# --- helpers of the claims: synthetic curves against hand computations ----------------------------


def test_window_mean_and_fall_rate():
    loss = np.arange(10.0)
    assert icl_metrics.window_mean(loss, 4, 1) == pytest.approx(4.0)
    assert icl_metrics.window_mean(loss, 0, 2) == pytest.approx(1.0)
    assert icl_metrics.window_mean(loss, 9, 3) == pytest.approx(7.5)  # clipped at the end: indices 6..9
    steps = [1, 10, 100, 1000]
    values = [5.0, 4.0, 3.0, 2.0]  # one nat per decade
    assert icl_metrics.fall_rate(steps, values, 10, 1000) == pytest.approx(1.0)
    assert icl_metrics.fall_rate(steps, values, 10 ** 0.5, 10 ** 2.5) == pytest.approx(1.0)  # interpolated in log step
    with pytest.raises(ValueError):
        icl_metrics.fall_rate(steps, values, 100, 10)


def test_first_divergence():
    steps = [1, 5, 10, 20, 40]
    reference = [3.0, 2.0, 2.0, 2.0, 2.0]
    values = [2.0, 2.0, 1.99, 1.9, 1.5]  # below by 1 at step 1 (before min_step), by 0.1 from step 20
    assert icl_metrics.first_divergence(steps, reference, values, margin=0.05) == 20
    assert icl_metrics.first_divergence(steps, reference, values, margin=0.05, min_step=1) == 1
    assert icl_metrics.first_divergence(steps, reference, values, margin=1.0) is None


def test_nonconvex_steps_find_a_bump_only():
    steps = np.unique(np.geomspace(1, 10_000, 60).astype(int))
    x = np.log10(steps)
    convex = 3.0 * np.exp(-0.5 * x)  # falls ever more slowly per decade: convex in log step
    assert icl_metrics.nonconvex_steps(steps, convex) == []
    bumped = convex - 0.5 / (1 + np.exp(-(x - 2.5) * 12))  # an extra fall around step 300
    found = icl_metrics.nonconvex_steps(steps, bumped)
    assert found and all(100 <= s <= 400 for s in found)
    # the rule by hand on four points: rates 1, 2 (steeper by 1 > 0.1 * 2), 0.5
    assert icl_metrics.nonconvex_steps([10, 100, 1000, 10_000], [5.0, 4.0, 2.0, 1.5]) == [100]


def test_trajectory_turns_find_the_corner():
    steps = np.arange(10, 30)
    path = np.array([[i, 0.0] if i <= 10 else [10.0, i - 10.0] for i in range(20)])  # right, then up at 10
    angles, pivot, angle = icl_metrics.trajectory_turns(path, steps, chord=3)
    assert pivot == 20 and angle == pytest.approx(90.0)
    assert np.isnan(angles[:3]).all() and np.nanmin(angles) == pytest.approx(0.0)
    # a straight line does not turn; where it stops moving, the angle is not taken
    line = np.array([[min(i, 8), 0.0] for i in range(20)], dtype=float)
    angles, pivot, angle = icl_metrics.trajectory_turns(line, steps, chord=3)
    assert angle == pytest.approx(0.0) and np.isnan(angles[12:]).all()
    assert icl_metrics.trajectory_turns(path[:5], steps[:5]) [1] is None


def _naive_ideal(seq, two=False):
    """The idealised induction pattern written out with loops."""
    n = len(seq)
    out = torch.zeros(n, n)
    for q in range(n):
        for k in range(1, q + 1):
            if k - 1 < q and seq[k - 1] == seq[q]:
                out[q, k] = 1.0 + (two and k >= 2 and q >= 1 and seq[k - 2] == seq[q - 1])
        if out[q].sum() == 0:
            out[q, 0] = 1.0
    return out / out.sum(-1, keepdim=True)


def test_idealised_patterns_against_loops():
    tokens = torch.tensor([[1, 2, 3, 1, 2, 4, 1, 2, 3], [5, 5, 5, 6, 5, 6, 6, 5, 5]])
    previous = interventions.idealised_pattern(tokens, "previous")
    assert previous[0, 0, 0] == 1 and previous[0, 4, 3] == 1 and previous.sum(-1).eq(1).all()
    for kind, two in (("induction", False), ("induction2", True)):
        ours = interventions.idealised_pattern(tokens, kind)
        for b in range(2):
            torch.testing.assert_close(ours[b], _naive_ideal(tokens[b].tolist(), two))
    # query 6 (token 1 after 4): targets 1 and 4 (after the earlier 1s); with two tokens, neither
    # has the prefix (4, 1); query 7 (token 2 after 1): targets 2 and 5, both after (1, 2): equal
    ours = interventions.idealised_pattern(tokens, "induction2")[0]
    assert ours[6, 1] == ours[6, 4] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        interventions.idealised_pattern(tokens, "bigram")


@torch.no_grad()
def test_patched_patterns_and_recovery_match_a_manual_forward():
    cfg, module, bridge = _small()
    tokens = induction.markov_batch(3, cfg.n_ctx, cfg.n_states, 5)
    clean, patterns = _manual_losses(module, tokens)
    ideal = interventions.idealised_pattern(tokens, "induction")
    frozen = [p.clone() for p in patterns]
    frozen[1][:, 0] = ideal  # layer 1, head 0 only
    manual, _ = _manual_losses(module, tokens, frozen=frozen)
    np.testing.assert_allclose(interventions.patched_pattern_losses(bridge, tokens, 1, 0, ideal), manual, atol=1e-5)
    ablated, _ = _manual_losses(module, tokens, ablate=(1, 0))
    expected = (ablated.mean() - manual.mean()) / (ablated.mean() - clean.mean())
    assert interventions.pattern_recovery(bridge, tokens, 1, 0, ideal) == pytest.approx(expected, rel=1e-4)
    # the head's own clean pattern recovers everything
    assert interventions.pattern_recovery(bridge, tokens, 1, 0, patterns[1][:, 0]) == pytest.approx(1.0, abs=1e-4)


SEEDS = Path(__file__).resolve().parents[2].parent / "shared" / "seeds"


def _specs() -> dict[str, claims.ClaimSpec]:
    return {v.id: v for v in vars(claim_specs).values() if isinstance(v, claims.ClaimSpec)}


def test_declared_criteria_pass_and_fail_their_examples_and_say_why_without_an_interval():
    specs = _specs()
    assert len(specs) == 32
    for spec in specs.values():
        if spec.test is None:
            continue
        passing, failing = spec.test_examples()
        assert spec.test(passing) and not spec.test(failing), spec.id
        if not isinstance(spec.test, claims.Region) and spec.role != "check":
            assert spec.why_no_interval, f"{spec.id}: a function test cannot take an interval: say why"
    assert claim_specs.NOT_SCHEDULE.role == "check" and "True by our schedule" in claim_specs.NOT_SCHEDULE.claim
    # the phase-change rows: the margin's sign is the criterion
    for t in ({"drop": 0.3, "final": -0.8, "unigram": -0.2}, {"drop": 0.01, "final": -0.8, "unigram": -0.2},
              {"drop": 0.3, "final": -0.1, "unigram": -0.2}):
        assert (claim_specs.change_margin(**t) > 0) == claim_specs.is_phase_change(t)
    assert claim_specs.change_margin(0.3, -0.8, -0.2) == pytest.approx(0.25)
    plain = {"drop": 0.06, "final": -0.2, "unigram": -0.1, "peak": 40}
    assert not claim_specs.SMEARED_EARLIER.test({"smeared": {**plain, "drop": 0.01, "peak": 20}, "plain": plain})
    assert not claim_specs.HEADS_IN_WINDOW.test([])
    assert not claim_specs.HEADS_IN_WINDOW.test([{"step": None, "start": 1, "end": 2}])
    assert claim_specs.LOSS_BUMP.test(float("inf"))
    assert not claim_specs.TEXT_CHANGE.test({"best": 0.9, "drop": 0.04})
    assert not claim_specs.TEXT_CHANGE.test({"best": 0.29, "drop": 1})
    for module in (claim_specs, phase_change, markov_ablations, text_model):
        assert not hasattr(module, "judged") and not hasattr(module, "glue")


def test_every_source_value_is_quoted_from_the_seed():
    if not SEEDS.is_dir():
        pytest.skip(f"the source studies are not beside this checkout ({SEEDS})")
    text = claims.seed_text(SEEDS)
    for spec in _specs().values():
        if spec.source_value is not None:
            assert claims.quote_found(spec.source_quote, text), spec.id


def test_bootstrap_helpers_resample_units():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 1.0, 50)
    ours = resampling.bootstrap_means(a, lambda m: m[0], "chains")
    direct = claims.bootstrap(a, units="chains")
    assert (ours.low, ours.high) == pytest.approx((direct.low, direct.high), abs=0.05) and ours.n == 50
    # paired rows: a ratio of means, every quantity of a unit drawn together
    rows = np.stack([a, 2 * a])
    paired = resampling.bootstrap_means(rows, lambda m: m[1] / m[0], "chains")
    assert paired.low == pytest.approx(2.0) and paired.high == pytest.approx(2.0)
    assert resampling.ratio(1.0, 2.0) == 0.5 and resampling.ratio(1.0, 0.0) == -1.0
    assert resampling.ratio(1.0, -1.0, undefined=-5) == -5
    # a resample of heads: the statistic sees unit indices
    seen = resampling.resampled(4, lambda i: float(len(set(i.tolist()))), "heads")
    assert 1 <= seen.low <= seen.high <= 4


def test_window_drops_average_to_the_window_drop():
    steps = np.unique(np.geomspace(1, 10_000, 60).astype(int))
    rng = np.random.default_rng(1)
    units = -0.5 / (1 + np.exp(-(np.log10(steps)[:, None] - 3.0) * 8)) + rng.normal(0, 0.05, (len(steps), 30))
    window = icl_metrics.phase_change_window(steps, units.mean(1))
    drops = icl_metrics.window_drops(steps, units, window)
    assert drops.shape == (30,) and drops.mean() == pytest.approx(window.drop)


def _margin_rows(drop: float, noise: float, n: int = 256) -> np.ndarray:
    rng = np.random.default_rng(2)
    drops = drop + rng.normal(0, noise, n)
    return np.stack([drops - drops.mean() + drop, np.full(n, -0.5), np.full(n, -0.2)])  # fall, final, unigram


@pytest.mark.parametrize("drop, noise, verdict", [(0.0514, 0.05, "inconclusive"), (0.3, 0.05, "reproduced"),
                                                  (0.01, 0.01, "not_reproduced")])
def test_a_phase_change_within_the_held_out_noise_is_inconclusive(drop, noise, verdict):
    rows = _margin_rows(drop, noise)
    margin = lambda m: claim_specs.change_margin(*m)  # noqa: E731
    interval = resampling.bootstrap_means(rows, margin, "held-out chains")
    row = claim_specs.MULTI_LAYER_CHANGE.measure(margin(rows.mean(1)), chapter="c", profile="smoke", interval=interval,
                                         detail="x")
    assert row.measured == pytest.approx(min(drop - claim_specs.DROP, 0.3)) and row.verdict == verdict
    opposite = {"inconclusive": "inconclusive", "reproduced": "not_reproduced", "not_reproduced": "reproduced"}
    none = claim_specs.ONE_LAYER_NO_CHANGE.measure(margin(rows.mean(1)), chapter="c", profile="smoke", interval=interval,
                                           drop="x", final="x", unigram="x")
    assert none.verdict == opposite[verdict] and none.interval_kind.endswith("held-out chains")


# --- the chapter's studies on tiny models --------------------------------------------------------


TINY = dict(steps=30, snapshots=9, d_model=16, n_heads=2, n_ctx=24, batch_size=4)


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """The five Markov models at a tiny size (30 steps, 9 snapshots), measured and ablated."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPTIM_HUNTER_CACHE", str(tmp_path_factory.mktemp("cache")))
        for name, (layers, smeared) in induction.VARIANTS.items():
            _shrink(mp, name, induction.make_config(layers, smeared, **TINY))
            for seed, seed_name in enumerate(zoo.seed_names(name)[1:], 1):  # the other training seeds' models
                mp.setitem(zoo._FAMILIES, seed_name, zoo._FAMILIES[name].with_seed(seed, seed_name))
        study = phase_change.phase_change_study("smoke", n_eval=12, n_pca=3)
        yield study, markov_ablations.ablation_study(study, n_tokens=8)


def test_phase_change_study_matches_direct_computation(studies):
    study, _ = studies
    names = [zoo.seed_names(m)[s] for s in range(3) for m in claim_specs.MARKOV_MODELS]
    assert list(study.models_table().index) == names
    assert study.n_ctx == 24 and list(study.models_table()["training seed"]) == [s for s in range(3) for _ in range(5)]
    for seed_study in study.seeds:  # the other seeds' models: heads scored at every other snapshot and the last
        for name, run in seed_study.runs.items():
            assert run.name == zoo.seed_names(name)[seed_study.seed]
            assert list(run.head_steps) == snapshots.head_grid(run.steps, 2)
            assert len(run.scores["prefix_matching"]) == len(run.head_steps)
    tokens = induction.eval_tokens(zoo.config(claim_specs.FOCUS), 12)
    for name, run in study.runs.items():
        final = zoo.load(name, progress=False)
        with torch.no_grad():
            direct = icl_metrics.token_losses(final(tokens), tokens)
        np.testing.assert_allclose(run.by_index[-1], direct.mean(0), atol=1e-5)
        np.testing.assert_allclose(run.pca_vectors[-1], direct[:3].reshape(-1), atol=1e-5)
        np.testing.assert_allclose(run.scores["prefix_matching"][-1],
                                   snapshots.head_scores(final, tokens[:16])["prefix_matching"],
                                   atol=1e-6)
        np.testing.assert_allclose(run.ov_eigenvalues, heads.ov_eigenvalue_score(final), atol=1e-8)
        assert run.window == icl_metrics.phase_change_window(run.steps, run.icl)
    bayes = induction.bayes_loss_by_index(tokens, 10).mean(0)
    assert study.reference["bayes"] == pytest.approx(float(icl_metrics.icl_score(bayes, study.early, study.late, 2)))
    table = study.windows_table()
    assert table.loc["attn-only-2l", "phase change"] == study.has_change("attn-only-2l")
    assert study.sensitivity_table().shape == (5, len(set(study.index_pairs())) + 1)
    assert len(study.head_figures()) == 4 and len(study.loss_index_figures()) == 2
    assert study.demo["pattern"].shape == (2, 20, 20)
    assert set(study.numbers()) >= {"ih_early", "ih_bayes", "ih_snapshots"}


DECIDED = ("reproduced", "not_reproduced", "inconclusive")


def test_phase_change_claims(studies):
    study, _ = studies
    rows = claims.rows_of(study)
    ids = [r.id for r in rows]
    assert len(ids) == len(set(ids)) == 22
    assert [s.seed for s in study.seeds] == [1, 2] and all(len(s.runs) == 5 for s in study.seeds)
    assert study.seeds_table().shape[0] == 15
    assert set(ids) <= set(claims.declared())
    assert all(r.chapter == "induction_heads" and r.profile == "smoke" for r in rows)
    by_id = {r.id: r for r in rows}
    one = study.runs["attn-only-1l"]
    row = by_id["induction.one_layer_no_induction_heads"]
    assert row.measured == pytest.approx(float(np.nanmax(one.scores["prefix_matching"])))
    values = [float(np.nanmax(s.runs["attn-only-1l"].scores["prefix_matching"])) for s in (study, *study.seeds)]
    predicted = intervals.prediction_interval(values)
    assert row.interval == pytest.approx(predicted.as_list()) and row.interval_kind == predicted.kind
    assert row.verdict == claim_specs.ONE_LAYER_NO_HEADS.test.decide(predicted)
    assert f"{sum(v < 0.3 for v in values)} of 3 meet the criterion" in row.claim
    for name, run in study.runs.items():  # the per-chain values average to the numbers of the curves
        np.testing.assert_allclose(run.icl_chains.mean(1), run.icl, atol=1e-9)
        np.testing.assert_allclose(run.loss_chains.mean(1), run.loss, atol=1e-6)
        np.testing.assert_allclose(study.change_rows(name).mean(1), list(study.change_numbers(name).values()),
                                   atol=1e-9)
        margin, interval = study.change_margin(name)
        assert (margin > 0) == study.has_change(name) and interval.low <= margin <= interval.high
    for name, id in (("attn-only-1l", "induction.one_layer_no_phase_change"),
                     ("smeared-1l", "induction.smeared_one_layer_phase_change")):
        row, spec = by_id[id], claim_specs.SMEARED_ONE_LAYER if "smeared" in id else claim_specs.ONE_LAYER_NO_CHANGE
        assert row.measured == pytest.approx(study.change_margin(name)[0])
        assert row.interval is not None and row.verdict == spec.test.decide(claims.Interval(*row.interval, "", 1))
        assert f"{study.reference['unigram']:.3f}" in row.claim
    multi = by_id["induction.multi_layer_all_change"]
    margins = [study.change_margin(n)[0] for n in ("attn-only-2l", "attn-only-3l", "smeared-2l")]
    assert multi.measured == pytest.approx(min(margins)) and multi.interval is not None
    w = study.runs[claim_specs.FOCUS].window
    assert by_id["induction.window_fraction_of_training"].measured == pytest.approx(w.end / 30)
    assert by_id["induction.window_fraction_of_training"].verdict == "measured"
    assert by_id["induction.not_schedule_driven"].verdict in ("check", "measured")
    assert not by_id["induction.not_schedule_driven"].decides_source
    post = by_id["induction.post_change_icl_score"]
    assert post.verdict == "measured" and post.interval[0] <= post.measured <= post.interval[1]
    for id in ("induction.prefix_vs_k_composition", "induction.copying_vs_ov_eigenvalues",
               "induction.size.mid_context_catch_up", "induction.icl_index_choice"):
        assert by_id[id].verdict in DECIDED and by_id[id].interval is not None, id
    for row in rows:  # every verdict has an interval or says why not
        assert row.verdict not in DECIDED or row.interval is not None or row.why_no_interval, row.id
    for id in ("induction.icl_share_in_window", "induction.icl_constant_after_change"):
        assert (by_id[id].verdict == "measured") == (not study.has_change(claim_specs.FOCUS))
    small, large = study.runs["attn-only-2l"], study.runs["attn-only-3l"]
    gap = small.by_index[-1] - large.by_index[-1]
    late = float(icl_metrics.window_mean(gap, study.late, 2))
    early = by_id["induction.size.early_advantage"]
    if late > 0:
        first = max(1, round(10 / 512 * study.n_ctx))
        assert early.measured == pytest.approx(float(icl_metrics.window_mean(gap, first, 2)) / late)


def test_ablation_study(studies):
    study, abl = studies
    assert abl.table().shape == (4, 6)
    assert abl.removed_fraction == pytest.approx(1 - abl.icl_without / abl.ablation.clean_icl)
    assert abl.across["full"].shape == (len(abl.across_steps), 4) and len(abl.across_removed) == len(abl.across_steps)
    assert all(l == 1 for l, _ in abl.induction_heads)
    assert set(abl.recovery) == {"previous", "induction", "induction2"}
    assert np.isfinite(list(abl.recovery.values())).all()
    # the per-chain values average to the numbers
    assert abl.chain_icl().mean() == pytest.approx(abl.ablation.clean_icl)
    assert abl.without_chains.mean() == pytest.approx(abl.icl_without)
    assert abl.chain_icl((1, 0)).mean() == pytest.approx(abl.ablation.icl_full[1, 0])
    assert abl.across_chains[:, 0].mean(-1) == pytest.approx(abl.across_clean)
    for kind, parts in abl.recovery_chains.items():
        c, a, i = parts.mean(1)
        assert (a - i) / (a - c) == pytest.approx(abl.recovery[kind])
    rows = {r.id: r for r in claims.rows_of(abl)}
    assert len(rows) == 7
    two = rows["induction.idealised.two_token_prefix"]
    assert two.measured == pytest.approx(abl.recovery["induction2"] - abl.recovery["induction"])
    others = [(0, 0), (0, 1)] + [h for h in [(1, 0), (1, 1)] if h not in abl.induction_heads]
    increase = np.mean([abl.ablation.icl_full[h] < abl.ablation.clean_icl for h in others])
    assert rows["induction.other_ablations_increase_icl"].measured == pytest.approx(increase)
    before = rows["induction.before_after_negative"]
    assert before.measured == pytest.approx(min(abl.attribution["full"][h] for h in abl.induction_heads))
    for row in rows.values():  # decided over the seeds: their range, or why there is none
        assert row.verdict not in DECIDED or row.interval is not None or row.why_no_interval, row.id
    assert len(abl.across_figures()) == 2
    assert [a.seed for a in abl.seeds] == [1, 2] and abl.seeds_table().shape == (3, 6)
    assert all(len(a.across_steps) <= 3 for a in abl.seeds)  # smoke: three snapshots across the other seeds' windows


@pytest.mark.parametrize("heads, decided", [(((1, 0), (1, 1)), False), (((1, 0),), True)])
def test_ablating_every_head_of_a_layer_is_measured_only(studies, heads, decided):
    _, abl = studies
    rows = {r.id: r for r in claims.rows_of(dataclasses.replace(abl, induction_heads=heads))}
    for id in ("induction.ablation_removes_icl", "induction.ablation_through_training"):
        row = rows[id]
        assert (row.verdict in DECIDED) == (decided and isinstance(row.measured, float)), id
        assert ("cannot tell the induction heads from it" in row.claim) != decided
    assert rows["induction.ablation_removes_icl"].interval is not None


def test_text_study_on_a_tiny_code_model(tmp_path, monkeypatch):
    from optim_hunter.zoo import code_corpus

    monkeypatch.setenv("OPTIM_HUNTER_CACHE", str(tmp_path))
    cfg = code_corpus.make_config(steps=40, snapshots=16, d_model=16, n_heads=2, n_ctx=64, vocab_size=300,
                                  batch_size=4, bpe_bytes=60_000, max_bytes=120_000)
    _shrink(monkeypatch, claim_specs.TEXT_MODEL, cfg)
    text = text_model.text_study("smoke")
    assert text.curves["by_index"].shape[1] == 63 and text.final["steps"].tolist() == [40]
    best, layer, head = text.best
    assert layer == 1 and best == pytest.approx(text.curves["prefix_matching"][-1][1].max())
    rows = {r.id: r for r in claims.rows_of(text)}
    assert set(rows) == {"induction.text.phase_change", "induction.text.icl_before_change",
                         "induction.text.post_change_icl_score"}
    post = rows["induction.text.post_change_icl_score"]
    assert post.measured == pytest.approx(float(text.final["icl"][-1])) and post.interval is not None
    np.testing.assert_allclose(text.curves["icl_units"].mean(1), text.curves["icl"], atol=1e-6)
    before = rows["induction.text.icl_before_change"]
    assert before.measured == pytest.approx(text.icl_before) and before.interval is not None
    assert (before.verdict in ("reproduced", "not_reproduced", "inconclusive")) == text.changed
    for changed in (True, False):  # before a phase change only when there is one
        monkeypatch.setattr(text_model.TextStudy, "changed", property(lambda self, c=changed: c))
        row = {r.id: r for r in claims.rows_of(text)}["induction.text.icl_before_change"]
        assert (row.verdict != "measured") == changed
        assert ("no change to be before" in row.claim) != changed
    assert len(text.figures()) == 5 and text.heads_table().shape == (4, 4)
    assert "|" in text.sample and set(text.numbers()) >= {"ih_text_loss", "ih_text_budget"}


# --- claims over training seeds ---------------------------------------------------------------------


def _one_layer_rows(*margins):
    return [[claim_specs.ONE_LAYER_NO_CHANGE.measure(m, chapter="c", profile="smoke",
                                                     interval=claims.bootstrap([m - 0.01, m + 0.01]),
                                             drop="x", final="x", unigram="x")] for m in margins]


@pytest.mark.parametrize("margins, verdict, agree", [((-0.1, -0.11, -0.12), "reproduced", 3),
                                                     ((-0.1, -0.2, -0.05), "inconclusive", 3),  # another seed may cross
                                                     ((-0.1, 0.1, -0.2), "inconclusive", 2),
                                                     ((0.1, 0.11, 0.12), "not_reproduced", 0)])
def test_over_seeds_decides_on_another_seeds_prediction_interval(margins, verdict, agree):
    (row,) = seed_verdicts.over_seeds(_one_layer_rows(*margins))
    assert row.verdict == verdict and row.measured == margins[0]
    # mean +- t(0.975, 2) * s * sqrt(4 / 3), written out here
    half = 4.302653 * np.std(margins, ddof=1) * (4 / 3) ** 0.5
    assert row.interval == pytest.approx([np.mean(margins) - half, np.mean(margins) + half], abs=1e-5)
    assert row.interval_kind == "95% prediction interval for another of 3 training seeds"
    assert row.n == 3 and f"{agree} of 3 meet the criterion" in row.claim and not row.why_no_interval
    assert seed_verdicts.over_seeds(_one_layer_rows(*margins)[:1])[0].interval_kind.startswith("bootstrap")  # one seed: as it was


def test_over_seeds_with_function_tests_words_and_measured_rows():
    change = {"drop": 0.3, "final": -0.8, "unigram": -0.2}

    def earlier(smeared, plain):
        return [claim_specs.SMEARED_EARLIER.measure(smeared / plain, chapter="c", profile="smoke", smeared=smeared,
                                                    plain=plain,
                                            tested={"smeared": {**change, "peak": smeared},
                                                    "plain": {**change, "peak": plain}})]

    (row,) = seed_verdicts.over_seeds([earlier(100, 200), earlier(300, 200), earlier(50, 200)])
    assert row.verdict == "inconclusive" and row.interval[0] < 0.25 and row.interval[1] > 1.5 and "2 of 3" in row.claim
    (row,) = seed_verdicts.over_seeds([earlier(100, 200), earlier(150, 200)])
    assert row.verdict == "reproduced" and row.interval_kind == "95% prediction interval for another of 2 training seeds"

    def formed(value, tested):
        return [claim_specs.HEADS_IN_WINDOW.measure(value, chapter="c", profile="smoke", model="all", tested=tested,
                                                    detail="x")]

    inside = [{"step": 3, "start": 1, "end": 5}]
    (row,) = seed_verdicts.over_seeds([formed(1.0, inside), formed("no model had a phase change", []), formed(1.0, inside)])
    assert row.verdict == "inconclusive" and row.interval is None and "not a number" in row.why_no_interval
    assert "2 of 3" in row.claim

    def post(value):
        return [claim_specs.POST_CHANGE_ICL.measure(value, chapter="c", profile="smoke", name="m", early=1, late=2,
                                                    n_ctx=3,
                                            bayes="x", unigram="x")]

    (row,) = seed_verdicts.over_seeds([post(-0.1), post(-0.12), post(-0.11)])
    assert row.verdict == "measured" and row.interval == pytest.approx(intervals.prediction_interval([-0.1, -0.12, -0.11]).as_list())
    assert "seed 1: -0.12" in row.claim
