"""TransformersCallback: the Hugging Face Trainer drives the hook. Real transformers, tiny random BERT,
a tokenizer built here, nothing downloaded."""
from tests.conftest import require

require("torch", "transformers", "accelerate", "tokenizers")

import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers as T  # noqa: E402

import tensortap as tt  # noqa: E402
from tests.gloo_exit import ATTEMPTS, launch_retrying_exit_abort  # noqa: E402
from tensortap_torch.integrations import TransformersCallback  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from hf_trainer_setup import Texts, classifier, tokenizer, training_args  # noqa: E402
from integration_checks import StopsAtTrainStep2, assert_applied_gradients, assert_steps, run_bounded  # noqa: E402,E501

torch.set_num_threads(1)
TRAIN, EVAL, PREDICT = tt.modes.TRAIN, tt.modes.EVAL, tt.modes.PREDICT
LAYER0 = "attention/bert.encoder.layer.0.attention.self"


class Weights(T.TrainerCallback):
    """The test's own record, outside tensortap: the weights after every optimizer step."""

    def __init__(self, model) -> None:
        self.model = model
        self.after = [{n: p.detach().clone() for n, p in model.named_parameters()}]

    def on_step_end(self, args, state, control, **kwargs):
        self.after.append({n: p.detach().clone() for n, p in self.model.named_parameters()})


def test_optimizer_steps_accumulated_clipped_gradients_modes_logs_and_tokens(tmp_path):
    tok = tokenizer()
    model = classifier()
    weights = Weights(model)
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["weights", "biases", "gradients", "losses", "metrics",
                                                                "attention"],
                   save_config=tt.SaveConfig(save_interval=1))
    args = training_args(str(tmp_path / "hf"), gradient_accumulation_steps=2, max_steps=3, max_grad_norm=0.05,
                         eval_strategy="steps", eval_steps=2)
    trainer = T.Trainer(model=model, args=args, train_dataset=Texts(tok, 16, 1), eval_dataset=Texts(tok, 8, 2),
                        processing_class=tok, callbacks=[TransformersCallback(hook), weights])
    trainer.train()
    trainer.predict(Texts(tok, 8, 3))
    hook.close()
    trial = tt.create_trial(str(tmp_path / "run"))

    # one step per optimizer step, numbered as global_step; evaluations (after steps 2 and 3, 2 batches
    # each) and the prediction in their own modes; global steps unique and increasing
    assert_steps(trial, "train train eval eval train eval eval predict predict")
    # the gradient saved at step g is the one the optimizer applied (plain SGD, lr 1: w_g - w_{g+1}):
    # both micro-batches accumulated, then clipped to max_grad_norm; saved once per optimizer step
    assert_applied_gradients(trial, weights.after, range(3), max_norm=0.05)
    assert trial.tensor("gradients/classifier.weight").steps(mode=TRAIN) == [0, 1, 2]

    # what the trainer logged, at the step that ended its window, once, in losses or metrics
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [float(trial.tensor("loss").value(h["step"] - 1, mode=TRAIN)) for h in logged] == \
        pytest.approx([h["loss"] for h in logged])
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    assert [float(trial.tensor("eval_loss").value(s, mode=EVAL)) for s in (1, 3)] == pytest.approx(evals)
    assert trial.tensor("eval_loss").steps(mode=EVAL) == [1, 3]   # at each evaluation's last step
    assert set(trial.tensor_names(collection="losses")) == {"loss", "eval_loss", "train_loss"}
    assert {"learning_rate", "grad_norm", "epoch"} <= set(trial.tensor_names(collection="metrics"))
    assert not set(trial.tensor_names(collection="metrics")) & set(trial.tensor_names(collection="losses"))

    # attention of every layer, with the tokens of the batch it came from (the trainer's tokenizer)
    layer1 = "attention/bert.encoder.layer.1.attention.self"
    assert sorted(trial.tensor_names(collection="attention")) == [LAYER0, layer1, "attention/tokens"]
    g_eval0 = trial.global_step(EVAL, 0)
    att, tokens = trial.tensor(LAYER0).value(g_eval0), trial.tensor("attention/tokens").value(g_eval0)
    first = trainer.eval_dataset.enc["input_ids"][:4]
    width = max(map(len, first))
    assert att.shape == (4, 4, width, width) and tokens.shape == (4, width)
    assert tokens[0].tolist() == tok.convert_ids_to_tokens(first[0]) + ["[PAD]"] * (width - len(first[0]))
    assert trial.tensor(LAYER0).steps(mode=TRAIN) == [0, 1, 2]


def test_a_rules_stop_ends_training_cleanly_with_a_message(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("TENSORTAP_LIVE_RULES", "thread")   # a rules process would import this module (transformers)
    tok = tokenizer()
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["losses"], save_config=tt.SaveConfig(save_interval=1))
    hook.add_rule(StopsAtTrainStep2(), action="stop_training")
    trainer = T.Trainer(model=classifier(), args=training_args(str(tmp_path / "hf"), max_steps=300, learning_rate=0.01),
                        train_dataset=Texts(tok, 64, 1), processing_class=tok, callbacks=[TransformersCallback(hook)])
    with caplog.at_level(logging.WARNING, logger="tensortap"):
        out = trainer.train()                                     # returns: no exception, no traceback
    hook.close()
    assert 2 < trainer.state.global_step < 300 and out.global_step == trainer.state.global_step
    assert any("stopping training after step" in r.getMessage() and "stops_at_train_step_2" in r.getMessage()
               for r in caplog.records)


class BrokenTokenizer:
    """A user's tokenizer that fails when tensortap asks it for token strings."""

    def convert_ids_to_tokens(self, ids):
        raise KeyError("no such id")


def test_a_failure_inside_the_callback_is_reported_and_training_goes_on(tmp_path, caplog):
    tok = tokenizer()
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["attention", "losses"],
                   save_config=tt.SaveConfig(save_interval=1))
    trainer = T.Trainer(model=classifier(), args=training_args(str(tmp_path / "hf"), max_steps=2),
                        train_dataset=Texts(tok, 16, 1), processing_class=tok,
                        callbacks=[TransformersCallback(hook, tokenizer=BrokenTokenizer())])
    with caplog.at_level(logging.WARNING, logger="tensortap"):
        trainer.train()
    hook.close()
    assert trainer.state.global_step == 2
    assert [r.getMessage() for r in caplog.records if "KeyError" in r.getMessage()][0].startswith("tensortap: ")
    trial = tt.create_trial(str(tmp_path / "run"))
    assert trial.tensor(LAYER0).steps(mode=TRAIN) == [0, 1] and not trial.has_tensor("attention/tokens")


def test_torch_compile_as_the_trainer_enables_it(tmp_path):
    tok = tokenizer()
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["gradients", "losses"],
                   save_config=tt.SaveConfig(save_interval=1))
    args = training_args(str(tmp_path / "hf"), max_steps=2, torch_compile=True, torch_compile_backend="eager")
    trainer = T.Trainer(model=classifier(), args=args, train_dataset=Texts(tok, 16, 1), processing_class=tok,
                        callbacks=[TransformersCallback(hook)])
    trainer.train()
    hook.close()
    assert type(trainer.model_wrapped).__name__ == "OptimizedModule"
    trial = tt.create_trial(str(tmp_path / "run"))
    assert trial.steps(mode=TRAIN) == [0, 1]
    assert trial.tensor("gradients/classifier.weight").steps(mode=TRAIN) == [0, 1]


WORKER = os.path.join(os.path.dirname(__file__), "hf_ddp_worker.py")


def test_torchrun_two_processes_give_one_worker_per_rank(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    outs = [str(tmp_path / f"run{a}") for a in range(ATTEMPTS)]

    def launch(attempt: int):
        return run_bounded([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            WORKER, outs[attempt], str(tmp_path / f"hf{attempt}")], env, timeout=300)

    attempt, code, log = launch_retrying_exit_abort(launch)
    assert code == 0, log[-6000:]
    out = outs[attempt]
    trial = tt.create_trial(out)
    assert trial.workers() == ["worker-0", "worker-1"]
    for w in trial.workers():
        assert trial.steps(mode=TRAIN, worker=w) == [0, 1, 2]
    # the gradient the optimizer applies is the all-reduced one: the same on both ranks
    g0, g1 = (trial.tensor("gradients/classifier.weight").value(1, mode=TRAIN, worker=w) for w in trial.workers())
    np.testing.assert_allclose(g0, g1, rtol=1e-6)
    x0, x1 = (trial.tensor("attention/tokens").value(0, worker=w) for w in trial.workers())
    assert x0.tolist() != x1.tolist()                            # each rank saw its own batch
