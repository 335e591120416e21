"""What torch.compile and AMP's GradScaler give (documented in docs/torch.md)."""
from tests.conftest import require

require("torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import tensortap as tt  # noqa: E402

torch.set_num_threads(1)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def test_compiled_module_captures_like_eager(run_dir):
    model = _mlp()
    hook = tt.Hook(run_dir, include_collections=["weights", "gradients", "outputs", "losses"],
                   save_config=tt.SaveConfig(save_interval=2))
    compiled = torch.compile(model, backend="eager")  # Dynamo; inductor behaves the same, slower to build
    hook.register(compiled)  # names come from the original module
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    grads = {}
    for step in range(5):
        x = torch.randn(3, 4, generator=g)
        opt.zero_grad()
        loss = compiled(x).square().mean()
        hook.record_loss(loss)
        loss.backward()
        grads[step] = model[2].weight.grad.clone()
        opt.step()
    hook.close()
    assert not hook.errors
    trial = tt.create_trial(run_dir)
    assert trial.steps() == [0, 2, 4]
    assert {"0.weight", "gradients/2.weight", "2/output_0", "gradients/2/output_0", "loss"} <= set(trial.tensor_names())
    assert np.array_equal(trial.tensor("gradients/2.weight").value(4), grads[4].numpy())


def test_grad_scaler_gradients_are_the_scaled_ones(run_dir):
    if not hasattr(torch, "amp") or not hasattr(torch.amp, "GradScaler"):
        pytest.skip("torch.amp.GradScaler not in this torch")
    model = _mlp()
    hook = tt.Hook(run_dir, include_collections=["gradients"], save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(3, 4)
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().square().mean()
    scaler.scale(loss).backward()
    scaled = model[0].weight.grad.clone()
    scaler.step(opt)  # unscales in place, then steps
    scaler.update()
    hook.close()
    got = tt.create_trial(run_dir).tensor("gradients/0.weight").value(0)
    assert np.array_equal(got, scaled.numpy())
    np.testing.assert_allclose(got / 1024.0, (scaled / 1024.0).numpy())
