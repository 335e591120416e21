"""Built-in rules on the numpy MLP, which really trains: each rule fires on a run trained into its
pathology, at a sensible step, and stays quiet on a healthy run."""
from __future__ import annotations

import numpy as np
import pytest

import tensortap as tt
from tensortap.testing import make_data
from tt_rules_helpers import assert_quiet, evaluate, first_fired, mlp_run

R = tt.rules.get


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    """One healthy run shared by the quiet checks: learnable task, sane lr, eval every 5 steps."""
    d = str(tmp_path_factory.mktemp("healthy") / "run")
    x, y = make_data(512, seed=1)
    _, _, losses = mlp_run(d, steps=40, lr=1.0, data=(x[:384], y[:384]), eval_data=(x[384:], y[384:]),
                           eval_every=5, labels=True)
    assert losses[-1] < losses[0] * 0.7  # it really learned
    return d


def full_batch(seed=1, n=128):
    return make_data(n, seed=seed)


def test_vanishing_gradient_quiet(healthy):
    assert_quiet(evaluate(R("vanishing_gradient")(), healthy))


def test_exploding_tensor_nan_injected_at_step_12(run_dir, healthy):
    def inject(model, step, x):
        if step == 12:
            model.params["fc1.weight"][0, 0] = np.nan
    mlp_run(run_dir, steps=20, before_step=inject)
    res = evaluate(R("exploding_tensor")(), run_dir)
    assert first_fired(res) == 12
    fired = [r for r in res if r.fired][0]
    assert "fc1.weight" in fired.message and "NaN" in fired.message
    # only_nan ignores infinities; a regex restricts what is checked
    assert first_fired(evaluate(R("exploding_tensor")(tensor_regex="^loss$"), run_dir)) == 12
    assert_quiet(evaluate(R("exploding_tensor")(), healthy))


def test_exploding_tensor_inf_vs_only_nan(run_dir):
    def inject(model, step, x):
        if step == 3:
            x[0, 0] = np.inf
            return x
    mlp_run(run_dir, steps=4, before_step=inject, lr=0.0)
    assert first_fired(evaluate(R("exploding_tensor")(collection_names="inputs"), run_dir)) == 3
    res = evaluate(R("exploding_tensor")(collection_names=["inputs"], only_nan=True), run_dir)
    assert first_fired(res) is None or "NaN" in [r for r in res if r.fired][0].message


def test_loss_not_decreasing_lr0_fires_at_step_10(run_dir, healthy):
    _, _, losses = mlp_run(run_dir, steps=25, lr=0.0, batch=128, data=full_batch())
    assert len(set(losses)) == 1
    res = evaluate(R("loss_not_decreasing")(), run_dir)
    assert first_fired(res) == 10
    r = [r for r in res if r.fired][0]
    assert r.values["loss"]["from_step"] == 0 and "did not decrease" in r.message
    # num_steps changes when it checks
    assert first_fired(evaluate(R("loss_not_decreasing")(num_steps=4), run_dir)) == 4


def test_loss_not_decreasing_quiet_and_diff_percent(run_dir):
    _, _, losses = mlp_run(run_dir, steps=41, lr=0.5, batch=128, data=full_batch())
    assert losses[40] < losses[0]
    assert_quiet(evaluate(R("loss_not_decreasing")(), run_dir))
    # demanding a 60 % drop every 10 steps fires once the loss flattens
    assert first_fired(evaluate(R("loss_not_decreasing")(diff_percent=60), run_dir)) is not None


def test_loss_not_decreasing_mode_eval_only(healthy):
    res = evaluate(R("loss_not_decreasing")(mode="eval", num_steps=2), healthy)
    checked = [r for r in res if not r.skipped]
    assert checked and all(tt.create_trial(healthy).mode(r.step) == tt.modes.EVAL for r in checked)
    assert_quiet(res)


def _noise_data(n, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 8)).astype(np.float32), rng.integers(0, 4, n).astype(np.int64)


def test_overfit_random_labels_fires(run_dir, healthy):
    """64 hidden units memorise 24 random labels; validation loss on fresh random labels grows."""
    _, _, losses = mlp_run(run_dir, steps=60, lr=1.0, batch=24, n_hidden=64, data=_noise_data(24, 5),
                           eval_data=_noise_data(200, 6), eval_every=5)
    assert losses[-1] < 0.5 * losses[0]
    res = evaluate(R("overfit")(), run_dir)
    step = first_fired(res)
    assert step is not None and tt.create_trial(run_dir).mode(step) == tt.modes.EVAL
    fired = [r for r in res if r.fired][0]
    assert fired.values["val_loss"] > fired.values["train_loss"] * 1.1
    # start_step after the run: nothing is compared
    assert first_fired(evaluate(R("overfit")(start_step=10_000), run_dir)) is None
    assert_quiet(evaluate(R("overfit")(), healthy))


def test_overfit_patience(run_dir):
    mlp_run(run_dir, steps=60, lr=1.0, batch=24, n_hidden=64, data=_noise_data(24, 5),
            eval_data=_noise_data(200, 6), eval_every=5)
    one = first_fired(evaluate(R("overfit")(), run_dir))
    three = first_fired(evaluate(R("overfit")(patience=3), run_dir))
    assert three is not None and three > one


def test_overtraining_plateau(run_dir, healthy):
    _, _, losses = mlp_run(run_dir, steps=80, lr=0.5, batch=128, data=full_batch())
    res = evaluate(R("overtraining")(), run_dir)
    step = first_fired(res)
    assert step is not None and step >= 10, step  # after the early fast descent
    r = [r for r in res if r.fired][0]
    assert r.values["steps_without_improvement"] >= 5
    # while the loss still falls fast the defaults stay quiet; later, a finer delta does
    assert_quiet(evaluate(R("overtraining")(), healthy, end_step=20))
    assert_quiet(evaluate(R("overtraining")(delta=0.001, patience_train=20), healthy))


def test_dead_relu_negative_bias(run_dir, healthy):
    def kill(model):
        model.params["fc1.bias"][:] = -20.0
    mlp_run(run_dir, steps=5, setup=kill)
    res = evaluate(R("dead_relu")(), run_dir)
    assert first_fired(res) == 0
    assert res[0].values["dead_percent"]["relu/output_0"] == 100.0
    assert_quiet(evaluate(R("dead_relu")(), healthy))


def test_weight_update_ratio_small_and_large(run_dir, tmp_path, healthy):
    mlp_run(run_dir, steps=4, lr=0.0)
    res = evaluate(R("weight_update_ratio")(), run_dir)
    assert first_fired(res) == 1 and "below" in [r for r in res if r.fired][0].message
    big = str(tmp_path / "big")
    mlp_run(big, steps=3, lr=1e4)
    res = evaluate(R("weight_update_ratio")(), big)
    assert first_fired(res) == 1 and "above" in [r for r in res if r.fired][0].message
    assert_quiet(evaluate(R("weight_update_ratio")(), healthy))  # eval steps are not compared


def test_all_zero_zero_init(run_dir, healthy):
    def zero(model):
        model.params["fc1.weight"][:] = 0.0
    mlp_run(run_dir, steps=5, setup=zero)
    res = evaluate(R("all_zero")(), run_dir)
    assert first_fired(res) == 0
    fired = [r for r in res if r.fired][0]
    assert "fc1.weight" in fired.message
    assert {"relu/output_0", "gradients/fc2.weight"} <= set(fired.values["zero_percent"])
    assert_quiet(evaluate(R("all_zero")(), healthy))
    # biases start at zero: asked for explicitly, they fire at step 0 only
    assert first_fired(evaluate(R("all_zero")(collection_names="biases"), healthy)) == 0


def test_unchanged_tensor_lr0(run_dir, healthy):
    mlp_run(run_dir, steps=6, lr=0.0, batch=128, data=full_batch())
    res = evaluate(R("unchanged_tensor")(), run_dir)
    assert first_fired(res) == 2
    assert first_fired(evaluate(R("unchanged_tensor")(num_steps=5), run_dir)) == 4
    assert_quiet(evaluate(R("unchanged_tensor")(), healthy))


def test_tensor_variance(run_dir, healthy):
    def blow_up(model):
        model.params["fc2.weight"] *= 1000.0
    mlp_run(run_dir, steps=3, setup=blow_up)
    res = evaluate(R("tensor_variance")(collection_names="weights", max_threshold=100.0), run_dir)
    assert first_fired(res) == 0 and "fc2.weight" in res[0].message
    assert_quiet(evaluate(R("tensor_variance")(collection_names="weights", max_threshold=100.0,
                                               min_threshold=1e-6), healthy))
    with pytest.raises(tt.ConfigError, match="max_threshold"):
        R("tensor_variance")()


def test_class_imbalance(run_dir, healthy):
    x, y = make_data(1024, seed=3)
    keep = np.flatnonzero(y == 0)
    rare = np.flatnonzero(y == 1)[:12]
    idx = np.random.default_rng(0).permutation(np.concatenate([keep, rare]))
    mlp_run(run_dir, steps=40, data=(x[idx], y[idx]), batch=64, labels=True, include=ALL_WITH_LABELS)
    res = evaluate(R("class_imbalance")(), run_dir)
    step = first_fired(res)
    assert step is not None and 7 <= step <= 12, step   # as soon as 500 labels were seen
    fired = [r for r in res if r.fired][0]
    assert "class 0 has" in fired.message and fired.values["imbalance"] > 10
    # the rare class is the one the model gets wrong
    assert "class 1" in fired.message.split("misprediction")[-1]
    assert_quiet(evaluate(R("class_imbalance")(), healthy, start_step=0))


ALL_WITH_LABELS = ("weights", "biases", "gradients", "outputs", "losses")


def test_confusion(run_dir, healthy):
    mlp_run(run_dir, steps=10, lr=0.0, labels=True)  # an untrained model: predictions are poor
    res = evaluate(R("confusion")(), run_dir)
    assert first_fired(res) == 0 and "recall below 0.9" in res[0].message
    # a model trained to convergence, checked on its held-out evaluation step, with the defaults
    good = run_dir + "-good"
    x, y = make_data(1024, seed=1)
    mlp_run(good, steps=150, lr=1.0, batch=128, n_hidden=32, data=(x[:768], y[:768]), eval_data=(x[768:], y[768:]),
            eval_every=150, labels=True, include=("losses",))
    trial = tt.create_trial(good)
    res = evaluate(R("confusion")(), good, start_step=trial.global_step(tt.modes.EVAL, 0))
    assert_quiet(res)
    assert min(res[0].values["recall"].values()) >= 0.9
    # the shared healthy run's last evaluation (~88 % recall) passes a looser threshold
    trial = tt.create_trial(healthy)
    last_eval = trial.global_step(tt.modes.EVAL, trial.steps(mode="eval")[-1])
    assert_quiet(evaluate(R("confusion")(min_diag=0.75, max_off_diag=0.2), healthy, start_step=last_eval))


def test_similar_across_runs(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    mlp_run(a, steps=5, seed=0)
    mlp_run(b, steps=5, seed=0)
    mlp_run(c, steps=5, seed=1)
    assert_quiet(evaluate(R("similar_across_runs")(other_trial=b), a))
    res = evaluate(R("similar_across_runs")(other_trial=c, collection_names="weights"), a)
    assert first_fired(res) == 0 and "fc1.weight" in res[0].message
    with pytest.raises(tt.ConfigError, match="other_trial"):
        R("similar_across_runs")()
