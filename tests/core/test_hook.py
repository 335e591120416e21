"""Hook semantics with the numpy MLP, which really trains: steps, modes, collections, saves."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import tensortap as tt
from tensortap.testing import NumpyMLP, make_data
from tt_store_helpers import train_mlp

PARAMS = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")


def test_30_steps_interval_10_bit_identical(run_url):
    snaps = train_mlp(run_url, steps=30, save_interval=10)
    trial = tt.create_trial(run_url)
    assert trial.steps() == [0, 10, 20]
    assert trial.is_complete()
    assert set(trial.tensor_names(collection="weights")) == {"fc1.weight", "fc2.weight"}
    assert set(trial.tensor_names(collection="biases")) == {"fc1.bias", "fc2.bias"}
    for s in (0, 10, 20):
        for p in PARAMS:
            got, want = trial.tensor(p).value(s), snaps[s]["params"][p]
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == want.tobytes(), f"{p} at step {s}"
            g = trial.tensor(f"gradients/{p}").value(s)
            assert g.tobytes() == snaps[s]["grads"][p].tobytes()
        assert trial.tensor("loss").value(s) == snaps[s]["loss"]
    # training happened: the loss went down and saved weights differ between steps
    assert snaps[29]["loss"] < snaps[0]["loss"]
    assert not np.array_equal(trial.tensor("fc1.weight").value(0), trial.tensor("fc1.weight").value(10))
    assert trial.tensor("fc1.weight").steps() == [0, 10, 20]
    with pytest.raises(tt.StepNotFound, match="was not saved"):
        trial.tensor("fc1.weight").value(5)
    with pytest.raises(tt.TensorNotFound, match='Did you mean "fc1.weight"'):
        trial.tensor("fc1.weigth")


def _mode_loop(hook, model, epochs=3, train_steps=4, eval_steps=2):
    """Interleave train and eval like a user loop; return [(mode, params used)] per iteration."""
    x, y = make_data(64)
    log = []
    for _ in range(epochs):
        hook.set_mode(tt.modes.TRAIN)
        model.train()
        for i in range(train_steps):
            log.append(("train", {k: v.copy() for k, v in model.params.items()}))
            model.loss(model.forward(x[i * 4:i * 4 + 4]), y[i * 4:i * 4 + 4])
            model.backward()
            model.sgd_step(0.1)
        hook.set_mode(tt.modes.EVAL)
        model.eval()
        for i in range(eval_steps):
            log.append(("eval", {k: v.copy() for k, v in model.params.items()}))
            model.forward(x[32 + i * 4:36 + i * 4])
    return log


def test_per_mode_steps_interleaved(run_url):
    model = NumpyMLP()
    cfg = tt.SaveConfig({tt.modes.TRAIN: tt.SaveConfigMode(save_interval=3),
                         tt.modes.EVAL: tt.SaveConfigMode(save_interval=1)})
    hook = tt.Hook(run_url, include_collections=["weights"], save_config=cfg)
    hook.register(model)
    log = _mode_loop(hook, model)
    hook.close()
    trial = tt.create_trial(run_url)
    # 3 epochs x (4 train + 2 eval): train mode steps 0..11, eval mode steps 0..5, global 0..17
    train_globals = [g for g, (m, _) in enumerate(log) if m == "train"]
    eval_globals = [g for g, (m, _) in enumerate(log) if m == "eval"]
    assert trial.steps(mode=tt.modes.TRAIN) == [0, 3, 6, 9]
    assert trial.steps(mode="eval") == [0, 1, 2, 3, 4, 5]
    assert trial.steps() == sorted([train_globals[i] for i in (0, 3, 6, 9)] + eval_globals)
    for k, g in enumerate(eval_globals):
        assert trial.mode(g) == tt.modes.EVAL and trial.mode_step(g) == k
        assert trial.global_step(tt.modes.EVAL, k) == g
        assert np.array_equal(trial.tensor("fc1.weight").value(k, mode=tt.modes.EVAL), log[g][1]["fc1.weight"])
    for k in (0, 3, 6, 9):
        g = train_globals[k]
        assert np.array_equal(trial.tensor("fc2.weight").value(k, mode="train"), log[g][1]["fc2.weight"])
        assert np.array_equal(trial.tensor("fc2.weight").value(g), log[g][1]["fc2.weight"])
    assert trial.tensor("fc1.weight").steps(mode="train") == [0, 3, 6, 9]


def test_set_mode_without_adapter_starts_a_step(run_dir):
    hook = tt.Hook(run_dir, include_collections=["scalars"], save_config=tt.SaveConfig(save_interval=1))
    hook.save_scalar("acc", 0.5)
    hook.set_mode(tt.modes.EVAL)
    hook.save_scalar("acc", 0.7)
    hook.set_mode(tt.modes.TRAIN)
    hook.save_scalar("acc", 0.9)
    hook.close()
    trial = tt.create_trial(run_dir)
    assert trial.steps() == [0, 1, 2]
    assert trial.steps(mode="train") == [0, 1] and trial.steps(mode="eval") == [0]
    assert float(trial.tensor("acc").value(0, mode="eval")) == 0.7
    assert float(trial.tensor("acc").value(1, mode="train")) == 0.9


def test_per_collection_save_configs(run_dir):
    weights = tt.Collection("weights", save_config=tt.SaveConfig(save_interval=5))
    grads = tt.Collection("gradients", save_config=tt.SaveConfig(save_steps=[2, 7]))
    snaps = train_mlp(run_dir, steps=12, include=[weights, grads, "losses"],
                      save_config=tt.SaveConfig(save_interval=4))
    trial = tt.create_trial(run_dir)
    assert trial.tensor("fc1.weight").steps() == [0, 5, 10]
    assert trial.tensor("gradients/fc1.weight").steps() == [2, 7]
    assert trial.tensor("loss").steps() == [0, 4, 8]  # the hook's own config
    assert trial.steps() == [0, 2, 4, 5, 7, 8, 10]
    assert np.array_equal(trial.tensor("gradients/fc2.bias").value(7), snaps[7]["grads"]["fc2.bias"])
    assert np.array_equal(trial.tensor("fc2.weight").value(10), snaps[10]["params"]["fc2.weight"])


def test_include_regex_and_save_all(tmp_path):
    train_mlp(str(tmp_path / "rx"), steps=3, save_interval=1, include=[], include_regex=[r"^fc2\.", "relu/output"])
    trial = tt.create_trial(str(tmp_path / "rx"))
    assert trial.tensor_names() == ["fc2.bias", "fc2.weight", "relu/output_0"]  # loss: not included
    assert trial.tensor_names(collection="default") == ["fc2.bias", "fc2.weight", "relu/output_0"]
    assert trial.tensor("relu/output_0").value(0).min() >= 0  # after the ReLU
    train_mlp(str(tmp_path / "all"), steps=2, save_interval=1, include=[], save_all=True)
    names = tt.create_trial(str(tmp_path / "all")).tensor_names()
    for n in ("fc1.weight", "gradients/fc1.weight", "fc1/input_0", "fc1/output_0", "relu/output_0",
              "fc2/output_0", "loss"):
        assert n in names


def test_save_tensor_save_scalar_record_loss(run_url):
    hook = tt.Hook(run_url, include_collections=["losses", "scalars"], save_config=tt.SaveConfig(save_interval=2))
    for s in range(4):
        hook.begin_step()
        hook.record_loss(np.float32(1.0 / (s + 1)))
        hook.save_scalar("lr", 0.1 * s)
        hook.save_tensor("labels", np.arange(s + 1), collections=["labels", "extra"])
    hook.close()
    trial = tt.create_trial(run_url)
    assert trial.steps() == [0, 1, 2, 3]  # save_scalar saves whenever it is called
    assert trial.tensor("lr").steps() == [0, 1, 2, 3]
    assert trial.tensor("loss").steps() == [0, 2]  # losses follow the save config
    assert trial.tensor("labels").steps() == [0, 2]  # an un-included collection: steps the hook saves
    assert trial.tensor("loss").value(2) == np.float32(1 / 3)
    assert float(trial.tensor("lr").value(2)) == pytest.approx(0.2)
    assert list(trial.tensor("labels").value(2)) == [0, 1, 2]
    assert trial.tensor_names(collection="labels") == ["labels"]
    assert trial.tensor_names(collection="extra") == ["labels"]
    assert trial.tensor_names(collection="losses") == ["loss"]


def test_reductions_instead_of_values(run_url):
    snaps = train_mlp(run_url, steps=2, save_interval=1, include=["weights"],
                      reduction_config=tt.ReductionConfig(reductions=["l2", "max", "histogram"], histogram_bins=8))
    t = tt.create_trial(run_url).tensor("fc1.weight")
    w = snaps[1]["params"]["fc1.weight"]
    assert t.reduction_value(1, "l2") == pytest.approx(float(np.sqrt(np.square(w, dtype=np.float64).sum())))
    assert t.reduction_value(1, "max") == float(w.max())
    counts, edges = t.reduction_value(1, "histogram")
    assert counts.sum() == w.size and len(edges) == 9
    with pytest.raises(tt.StepNotFound, match="only reductions"):
        t.value(1)


def test_unknown_collection_name_is_a_user_collection_with_did_you_mean(run_dir):
    """As in smdebug: a name that is not built in makes an empty collection of the user's own; one
    edit away from a built-in name (a likely typo) it is warned about, naming the built-in."""
    with pytest.warns(UserWarning, match='\'gradient\', which is not a built-in collection.*Did you mean "gradients"'):
        hook = tt.Hook(run_dir, include_collections=["weights", "gradient"])
    c = hook.get_collection("gradient")
    assert c.include_regex == () and not c.tensor_names
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # far from every built-in name: no warning
        tt.Hook(run_dir + "2", include_collections=["relu_activations"]).close()
    hook.close()


def test_user_collection_filled_after_register(run_dir):
    """`get_collection(name).include(regex)` after register() and `save_tensor(..., collections=name)`
    both fill a user collection, on the steps the hook's save config saves."""
    model = NumpyMLP(seed=0)
    hook = tt.Hook(run_dir, include_collections=["weights", "relu_acts", "my_labels"],
                   save_config=tt.SaveConfig(save_interval=2))
    hook.register(model)
    hook.get_collection("relu_acts").include("^relu/")
    x, y = make_data(64, seed=1)
    outs = {}
    for s in range(4):
        out = model.forward(x[s * 8:(s + 1) * 8])
        outs[s] = np.maximum(model._cache[1], 0)
        hook.save_tensor("labels", y[s * 8:(s + 1) * 8], collections="my_labels")
        model.loss(out, y[s * 8:(s + 1) * 8])
        model.backward()
        model.sgd_step(0.1)
    hook.close()
    trial = tt.create_trial(run_dir)
    assert trial.tensor_names(collection="relu_acts") == ["relu/input_0", "relu/output_0"]
    assert trial.tensor("relu/output_0").steps() == [0, 2]
    np.testing.assert_array_equal(trial.tensor("relu/output_0").value(2), outs[2])
    assert trial.tensor_names(collection="my_labels") == ["labels"]
    assert trial.tensor("labels").steps() == [0, 2]
    np.testing.assert_array_equal(trial.tensor("labels").value(2), y[16:24])
    assert "fc1/output_0" not in trial.tensor_names()


def test_invalid_regex(run_dir):
    with pytest.raises(tt.ConfigError, match="invalid include_regex"):
        tt.Hook(run_dir, include_regex=["fc1[("])
    train_mlp(run_dir, steps=1, save_interval=1)
    with pytest.raises(tt.ConfigError, match="invalid regex"):
        tt.create_trial(run_dir).tensor_names(regex="(unclosed")


def test_unsupported_model_names_installed_plugins(run_dir):
    class FancyModel:  # defined in this test module: no plugin recognises it
        pass

    hook = tt.Hook(run_dir)
    with pytest.raises(tt.ConfigError) as e:
        hook.register(FancyModel())
    msg = str(e.value)
    assert "FancyModel" in msg and "Installed framework plugins:" in msg and "numpy" in msg
    assert "pip install tensortap-torch" in msg
    with pytest.raises(tt.ConfigError, match="unknown adapter 'pytorch'"):
        tt.Hook(run_dir, framework="pytorch")
    hook.close()


def test_wants_is_false_on_unsaved_steps(run_dir):
    hook = tt.Hook(run_dir, include_collections=["weights", "gradients"], save_config=tt.SaveConfig(save_interval=5))
    seen = []
    for _ in range(6):
        hook.begin_step()
        seen.append((hook.wants("weights"), hook.wants("gradients"), hook.wants("outputs")))
    hook.close()
    assert seen[0] == (True, True, False) and seen[5] == (True, True, False)
    assert all(w == (False, False, False) for w in seen[1:5])


def test_close_twice_and_saves_after_close_are_ignored(run_dir):
    hook = tt.Hook(run_dir, include_collections=["scalars"], save_config=tt.SaveConfig(save_interval=1))
    hook.save_scalar("a", 1.0)
    hook.close()
    hook.close()
    hook.save_scalar("a", 2.0)
    trial = tt.create_trial(run_dir)
    assert trial.steps() == [0] and trial.is_complete()
    assert hook.stats.steps_written == 1 and hook.stats.steps_dropped == 0


def test_scalars_collection_with_its_own_save_config_thins_save_scalar(run_dir):
    hook = tt.Hook(run_dir, include_collections=[tt.Collection("scalars", save_config=tt.SaveConfig(save_interval=3))])
    for s in range(7):
        hook.begin_step()
        hook.save_scalar("epoch_acc", float(s))
    hook.close()
    assert tt.create_trial(run_dir).tensor("epoch_acc").steps() == [0, 3, 6]


def test_close_after_failed_register_does_not_raise(tmp_path):
    from tensortap.testing import NumpyMLP

    run = str(tmp_path / "run")
    first = tt.Hook(run)
    first.register(NumpyMLP())
    first.close()
    with pytest.raises(tt.ConfigError, match="already holds a run"):  # refused at creation (issue 16)
        tt.Hook(run)
    second = tt.Hook(str(tmp_path / "run2"))
    with pytest.raises(tt.ConfigError, match="no installed tensortap plugin"):
        second.register(object())
    second.close()  # reported, never raised (it also runs at interpreter exit)


def test_dry_run_writes_and_claims_nothing(tmp_path):
    """tt.Hook(dry_run=True) trains bare: nothing appears on disk, not even out_dir, and nothing holds
    out_dir, so a real run may use it while the dry one is still open. Before: the Hook created
    out_dir and claimed workers/worker-0 at creation whatever it would save."""
    run = str(tmp_path / "nested" / "run")
    dry = tt.Hook(run, include_collections=["weights", "gradients", "losses", "scalars"],
                  save_config=tt.SaveConfig(save_interval=1), dry_run=True)
    assert dry.dry_run
    model = NumpyMLP(seed=3)
    dry.register(model)
    dry.register_loss(model)
    dry.add_rule(tt.rules.get("vanishing_gradient")(), action="stop_training")
    x, y = make_data(32, seed=4)
    for s in range(4):
        model.loss(model.forward(x[s * 8:s * 8 + 8]), y[s * 8:s * 8 + 8])
        model.backward()
        model.sgd_step(0.1)
        dry.save_scalar("acc", 0.5)
        dry.save_tensor("labels", y[s * 8:s * 8 + 8])
    assert dry.flush()
    assert not (tmp_path / "nested").exists()
    assert train_mlp(run, steps=3, save_interval=1)  # the real run, while the dry hook is open
    dry.close()
    assert dry.adapter is None and dry.stats is None and dry.errors == []
    assert tt.create_trial(run).steps() == [0, 1, 2]
