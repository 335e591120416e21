"""Values saved before the first training step (hook.save_tensor / record_loss / save_scalar
right after register, before the model's first forward pass) belong to that first step: the
model's steps start at 0 and the early values land at step 0, as they were when saved."""
from tests.conftest import require

require("torch")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import tensortap as tt  # noqa: E402

torch.set_num_threads(1)


def test_values_saved_before_the_first_step_belong_to_step_0(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    run = str(tmp_path / "run")
    hook = tt.Hook(run, include_collections=["weights", "gradients", "losses", "scalars"],
                   save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    bias_then = model[0].bias.detach().clone().numpy()  # the reference: a copy made here, not by tensortap
    w_then = model[0].weight.detach().clone().numpy()
    hook.save_tensor("labels", y, collections=["labels"])  # before any step
    hook.save_tensor("init_bias", model[0].bias, collections=["init"])  # changes in place from step 0 on
    hook.save_scalar("lr", 0.5)
    hook.record_loss(torch.tensor(9.0), name="loss_before")
    for _ in range(3):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        hook.record_loss(loss)
        loss.backward()
        opt.step()
    hook.close()

    trial = tt.create_trial(run)
    assert trial.steps() == [0, 1, 2]  # no step of their own: the model's steps start at 0
    assert trial.tensor("0.weight").steps() == [0, 1, 2]
    np.testing.assert_array_equal(trial.tensor("0.weight").value(0), w_then)  # what step 0's forward used
    assert trial.tensor("labels").steps() == [0]
    np.testing.assert_array_equal(trial.tensor("labels").value(0), y.numpy())
    np.testing.assert_array_equal(trial.tensor("init_bias").value(0), bias_then)  # as it was when saved
    assert not np.array_equal(trial.tensor("init_bias").value(0), model[0].bias.detach().numpy())
    assert float(trial.tensor("lr").value(0)) == 0.5 and trial.tensor("lr").steps() == [0]
    assert float(trial.tensor("loss_before").value(0)) == 9.0
    assert trial.tensor("loss").steps() == [0, 1, 2]


def test_values_saved_when_no_step_follows_are_written_at_close(tmp_path):
    """A script that only saves values (no model): they are kept, as step 0, at close."""
    run = str(tmp_path / "run")
    hook = tt.Hook(run, save_config=tt.SaveConfig(save_interval=1))
    hook.save_tensor("confusion", np.eye(3), collections=["metrics_extra"])
    hook.save_scalar("accuracy", 0.93)
    hook.close()
    trial = tt.create_trial(run)
    assert trial.steps() == [0]
    np.testing.assert_array_equal(trial.tensor("confusion").value(0), np.eye(3))
    assert float(trial.tensor("accuracy").value(0)) == 0.93
