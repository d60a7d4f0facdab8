"""Tests of optim_hunter.analysis.lsa and its lsa_construction, lsa_step_sizes and lsa_comparison
companions: the GD construction against an independent numpy reference, stacking, GD++, the step
sizes, the metrics, readouts, and training through optim_hunter.core.training (deterministic,
resumable, and the same weights as the plain Adam loop it replaced; all tiny, CPU, float64 where exact)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optim_hunter.analysis import lsa, lsa_comparison, lsa_construction, lsa_step_sizes
from optim_hunter.core import training

CFG = lsa.TaskConfig(d=10, n_context=10)
TOL = 1e-6  # the chapter's bar; float64 reaches ~1e-12


def numpy_gd(x: np.ndarray, y: np.ndarray, x_query: np.ndarray, etas):
    """Plain gradient descent on L(w) = 1/(2N) ||X w - y||^2 from w = 0, one task at a time.

    Returns the query prediction and the context residuals y - X w after the last step."""
    n, d = x.shape
    w = np.zeros(d)
    for eta in etas:
        w = w - eta * x.T @ (x @ w - y) / n
    return x_query @ w, y - x @ w


def numpy_gd_plus(x: np.ndarray, y: np.ndarray, x_query: np.ndarray, etas, gammas) -> float:
    """GD++ for one task: a step on the residuals, then x <- (I - gamma X^T X / N) x everywhere."""
    n, d = x.shape
    residual, prediction = y.copy(), 0.0
    for eta, gamma in zip(etas, gammas):
        delta = eta * x.T @ residual / n
        residual = residual - x @ delta
        prediction += x_query @ delta
        m = np.eye(d) - gamma * x.T @ x / n
        x, x_query = x @ m, m @ x_query  # m is symmetric
    return prediction


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def tasks_np(tasks: lsa.Tasks):
    return [t.numpy() for t in (tasks.x, tasks.y, tasks.x_query)]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), eta=st.floats(0.05, 3.0))
def test_one_layer_equals_one_gd_step_numpy(seed, eta):
    tasks = lsa.sample_tasks(CFG, 64, seed)
    model = lsa_construction.constructed_model(CFG.d, CFG.n_context, [eta])
    with torch.no_grad():
        out = model(lsa.tokens(tasks))
    x, y, xq = tasks_np(tasks)
    for b in range(len(x)):
        pred, residual = numpy_gd(x[b], y[b], xq[b], [eta])
        assert rel(-out[b, -1, -1], pred) <= TOL
        assert rel(out[b, :-1, -1], residual) <= TOL


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 5))
def test_k_layers_equal_k_steps_token_form(seed, k):
    tasks = lsa.sample_tasks(CFG, 32, seed)
    etas = list(np.random.default_rng(seed).uniform(0.3, 2.0, size=k))
    model = lsa_construction.constructed_model(CFG.d, CFG.n_context, etas)
    with torch.no_grad():
        e0 = lsa.tokens(tasks)
        states = model.residuals(e0)
    x, y, xq = tasks_np(tasks)
    for layer in range(1, k + 1):
        out = states[layer]
        # inputs are never written: only the y-slots carry the descent
        assert torch.equal(out[..., :-1], e0[..., :-1])
        for b in range(len(x)):
            pred, residual = numpy_gd(x[b], y[b], xq[b], etas[:layer])
            assert rel(-out[b, -1, -1], pred) <= TOL
            assert rel(out[b, :-1, -1], residual) <= TOL


def test_gd_plus_construction_matches_numpy():
    tasks = lsa.sample_tasks(CFG, 32, 7)
    etas, gammas = [1.1, 2.0, 0.7], [0.9, 0.3, 0.0]
    model = lsa_construction.constructed_model(CFG.d, CFG.n_context, etas, gammas)
    with torch.no_grad():
        pred = lsa.predict(model, tasks).numpy()
    ref = [numpy_gd_plus(*t, etas, gammas) for t in zip(*tasks_np(tasks))]
    assert rel(pred, ref) <= TOL
    assert rel(lsa_construction.gd_plus_predict(tasks, etas, gammas), ref) <= TOL


def test_weight_space_reference_matches_numpy():
    tasks = lsa.sample_tasks(CFG, 32, 3)
    etas = [0.5, 1.7, 1.0]
    ref = [numpy_gd(*t, etas)[0] for t in zip(*tasks_np(tasks))]
    assert rel(lsa_construction.gd_predict(tasks, etas), ref) <= 1e-12
    # GD++ with gamma = 0 is plain GD
    assert rel(lsa_construction.gd_plus_predict(tasks, etas, [0.0] * 3), ref) <= 1e-12


def test_verify_construction_table():
    tasks = lsa.sample_tasks(CFG, 64, 11)
    table = lsa_construction.verify_construction(tasks, [1.5] * 3)
    assert list(table["depth"]) == [1, 2, 3]
    assert (table["pred_rel_error"] <= TOL).all()
    assert (table["y_slots_rel_error"] <= TOL).all()
    assert (table["x_slots_max_change"] == 0).all()
    plus = lsa_construction.verify_construction(tasks, [1.5, 1.5], gammas=[0.5, 0.0])
    assert (plus["pred_rel_error"] <= TOL).all()


def test_shapes_and_query_is_not_a_key():
    tasks = lsa.sample_tasks(CFG, 5, 0, dtype=torch.float32)
    assert tasks.x.shape == (5, 10, 10) and tasks.y.shape == (5, 10)
    assert tasks.x_query.shape == (5, 10) and tasks.y_query.shape == (5,)
    e = lsa.tokens(tasks)
    assert e.shape == (5, 11, 11) and torch.all(e[:, -1, -1] == 0)
    for softmax in (False, True):
        model = lsa.AttentionModel(10, n_layers=2, softmax=softmax, init_scale=0.5, seed=1)
        out = model(e)
        assert out.shape == e.shape
        assert lsa.predict(model, tasks).shape == (5,)
        # moving the query leaves every context token as it was: the query is no key or value
        moved = e.clone()
        moved[:, -1, :-1] += 1.0
        assert torch.allclose(model(moved)[:, :-1], out[:, :-1])
        assert lsa_comparison.sensitivities(lsa.model_predictor(model), tasks).shape == (5, 10)


def test_sensitivities_and_compare():
    tasks = lsa.sample_tasks(CFG, 50, 4)
    gd = lsa_construction.gd_predictor([1.3])
    # one GD step from 0 applies W_1 = (eta/N) sum_i y_i x_i to the query
    w1 = 1.3 * torch.einsum("bn,bnd->bd", tasks.y, tasks.x) / CFG.n_context
    assert torch.allclose(lsa_comparison.sensitivities(gd, tasks), w1)
    constructed = lsa.model_predictor(lsa_construction.constructed_model(10, 10, [1.3]))
    same = lsa_comparison.compare(gd, constructed, tasks)
    assert same["sens_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert same["pred_diff"] < 1e-12 and same["sens_l2"] < 1e-12
    assert same["loss_a"] == pytest.approx(same["loss_b"])
    # a scaled copy points the same way but is a different model
    scaled = lsa_comparison.compare(gd, lsa_construction.gd_predictor([2.6]), tasks)
    assert scaled["sens_cosine"] == pytest.approx(1.0, abs=1e-12) and scaled["sens_l2"] > 0.1


def test_best_lr_is_the_scan_minimum():
    tasks = lsa.sample_tasks(CFG, 2000, 5)
    eta = lsa_step_sizes.best_gd_lr(tasks)
    scan = lsa_step_sizes.scan_gd_lr(tasks, np.linspace(0.1, 3.0, 59))
    assert scan["loss"].min() >= lsa_step_sizes.scan_gd_lr(tasks, [eta])["loss"][0] - 1e-12
    assert abs(scan.loc[scan["loss"].idxmin(), "eta"] - eta) <= 0.05 + 1e-9
    tuned = lsa_step_sizes.tune_gd(tasks, 1, starts=(1.0,))
    assert tuned.etas[0] == pytest.approx(eta, rel=1e-4) and tuned.gammas is None


def test_tuned_steps_beat_equal_steps():
    tasks = lsa.sample_tasks(CFG, 200, 6)
    eta = lsa_step_sizes.best_gd_lr(tasks)
    equal = float(lsa.loss(lsa_construction.gd_predict(tasks, [eta, eta]), tasks.y_query))
    tuned = lsa_step_sizes.tune_gd(tasks, 2, starts=(1.0,), max_iter=20)
    plus = lsa_step_sizes.tune_gd(tasks, 2, plus=True, starts=(1.0,), max_iter=20)
    assert tuned.tuning_loss <= equal + 1e-12
    assert plus.tuning_loss <= tuned.tuning_loss + 1e-9
    assert plus.predictor()(tasks).shape == (200,)


def test_task_stream_is_one_generator_drawn_in_order():
    stream = lsa.TaskStream(CFG, 8, seed=5)
    generator = torch.Generator().manual_seed(5)
    naive = [lsa.sample_tasks(CFG, 8, generator, dtype=torch.float32) for _ in range(6)]
    for step in (0, 1, 4, 2, 5, 5, 0):  # in order, skipping ahead, and back (a resumed run)
        got = stream(step)
        assert got.x.dtype == torch.float32
        assert all(torch.equal(a, b) for a, b in zip(got, naive[step]))
    with pytest.raises(ValueError):
        stream(-1)


def old_loop(model, steps, lr, seed, batch_size):
    """The LSA training loop before it moved to optim_hunter.core.training: Adam with a LambdaLR cosine
    to 5% of lr, tasks drawn in order from one generator. The recipe must reproduce it exactly."""
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(step / steps, 1.0))))
    for _ in range(steps):
        batch = lsa.sample_tasks(CFG, batch_size, generator, dtype=torch.float32)
        value = lsa.loss(lsa.predict(model, batch), batch.y_query)
        opt.zero_grad()
        value.backward()
        opt.step()
        schedule.step()
    return model


@pytest.mark.parametrize("n_layers,softmax", [(1, False), (2, True)])
def test_recipe_reproduces_plain_adam_with_cosine(n_layers, softmax):
    eval_tasks = lsa.sample_tasks(CFG, 64, 99)
    trained = lsa.train(CFG, lsa.recipe(12, lr=5e-3, seed=3, eval_every=4), eval_tasks,
                        n_layers=n_layers, softmax=softmax, batch_size=32)
    reference = old_loop(lsa.AttentionModel(CFG.d, n_layers=n_layers, softmax=softmax, seed=3),
                         12, 5e-3, 3, 32)
    for a, b in zip(trained.model.parameters(), reference.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-7)
    assert lsa.eval_loss(trained.model, eval_tasks) == pytest.approx(lsa.eval_loss(reference, eval_tasks))


def test_training_is_deterministic_and_learns():
    eval_tasks = lsa.sample_tasks(CFG, 256, 99)
    config = lsa.recipe(40, lr=1e-2, seed=3, eval_every=20)
    runs = [lsa.train(CFG, config, eval_tasks, batch_size=64) for _ in range(2)]
    h1, h2 = runs[0].history, runs[1].history
    assert list(h1.columns) == ["step", "train_loss", "eval_loss"]
    assert list(h1["step"]) == [0, 20, 40]
    assert h1.equals(h2)
    assert all(torch.equal(a, b) for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters()))
    assert h1["eval_loss"].iloc[-1] < h1["eval_loss"].iloc[0]
    # the step-0 row is the initial model: the trainer's build of the same seed
    initial = lsa.AttentionModel(CFG.d, seed=3)
    assert h1["eval_loss"].iloc[0] == lsa.eval_loss(initial, eval_tasks)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path):
    eval_tasks = lsa.sample_tasks(CFG, 64, 1)
    config = lsa.recipe(10, lr=1e-2, seed=4, eval_every=5)
    spec = lambda: lsa.train_spec(CFG, eval_tasks=eval_tasks, batch_size=16, data_seed=4)  # noqa: E731
    whole = training.train(spec(), config, progress=False).model
    training.train(spec(), config, tmp_path, progress=False, stop_at=6)
    resumed = training.train(spec(), config, tmp_path, progress=False)
    assert resumed.resumed_from == 6
    assert all(torch.equal(a, b) for a, b in zip(whole.parameters(), resumed.model.parameters()))


def test_readout_losses_follow_gd_steps():
    tasks = lsa.sample_tasks(CFG, 100, 12)
    etas = [1.2, 0.8, 1.5]
    readouts = lsa_comparison.readout_losses(lsa_construction.constructed_model(10, 10, etas), tasks)
    y = tasks.y_query.numpy()
    expected = [0.5 * np.mean(y**2)]  # the slot starts at 0
    for k in range(1, 4):
        pred = np.array([numpy_gd(*t, etas[:k])[0] for t in zip(*tasks_np(tasks))])
        expected.append(0.5 * np.mean((pred - y) ** 2))
    assert np.allclose(readouts, expected, rtol=1e-10)


def test_interpolation_endpoints_and_weight_cosine():
    tasks = lsa.sample_tasks(CFG, 200, 8)
    constructed = lsa_construction.constructed_model(10, 10, [1.4])
    # a function-preserving rescaling of the constructed layer: QK * 3, PV / 3, sign flipped
    other = lsa_construction.constructed_model(10, 10, [1.4])
    with torch.no_grad():
        other.layers[0].w_q.mul_(-3.0)
        other.layers[0].p.div_(-3.0)
    assert lsa_comparison.weight_cosine(other, constructed) == pytest.approx(1.0)
    path = lsa_comparison.interpolation(other, constructed, tasks, [0.0, 0.5, 1.0])
    target = float(lsa.loss(lsa_construction.gd_predict(tasks, [1.4]), tasks.y_query))
    assert np.allclose(path["loss"], target)
    trained = lsa.AttentionModel(10, 1, init_scale=0.3, seed=0, dtype=torch.float64)
    ends = lsa_comparison.interpolation(trained, constructed, tasks, [0.0, 1.0])["loss"]
    with torch.no_grad():
        assert ends[0] == pytest.approx(float(lsa.loss(lsa.predict(trained, tasks), tasks.y_query)))
    assert ends[1] == pytest.approx(target)
