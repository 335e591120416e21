"""A loop that drives the torch adapter's steps itself (hook.drive_steps), as the trainer integrations
and `tensortap run` do: one step per optimizer step with gradient accumulation, checked against a
twin model trained without tensortap."""
from tests.conftest import require

require("torch")

import copy  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import tensortap as tt  # noqa: E402

torch.set_num_threads(1)
TRAIN, EVAL = tt.modes.TRAIN, tt.modes.EVAL
K = 3  # micro-batches per optimizer step


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def test_one_step_per_optimizer_step_with_the_accumulated_gradient(run_dir):
    model, twin = _net(), _net()
    hook = tt.Hook(run_dir, include_collections=["weights", "gradients", "outputs"],
                   save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    hook.drive_steps([TRAIN])            # evaluation forwards still start EVAL steps themselves
    opt, topt = torch.optim.SGD(model.parameters(), lr=0.5), torch.optim.SGD(twin.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(1)
    data = [[(torch.randn(4, 6, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(K)]
            for _ in range(3)]
    want = []
    for step, micro in enumerate(data):
        for x, y in micro:
            hook.begin_step(TRAIN, step=step)   # the same number for each micro-batch: one step
            nn.functional.cross_entropy(model(x), y).backward()
        hook.capture_gradients()                # just before the optimizer applies them
        opt.step()
        opt.zero_grad()
        # the twin, without tensortap: weights used, the gradient applied, micro-batch 0's output
        w = twin[0].weight.detach().clone()
        out0 = twin(micro[0][0]).detach().clone()
        for x, y in micro:
            nn.functional.cross_entropy(twin(x), y).backward()
        want.append((w, twin[0].weight.grad.clone(), out0))
        topt.step()
        topt.zero_grad()
        model.eval()
        with torch.no_grad():
            model(torch.randn(2, 6))            # an evaluation forward between optimizer steps
        model.train()
    hook.close()
    trial = tt.create_trial(run_dir)
    assert trial.steps(mode=TRAIN) == [0, 1, 2] and trial.steps(mode=EVAL) == [0, 1, 2]
    assert trial.steps() == list(range(6))
    assert not trial.tensor_names(regex="#")    # later micro-batches are not extra calls of the layers
    for step, (w, grad, out0) in enumerate(want):
        np.testing.assert_array_equal(trial.tensor("0.weight").value(step, mode=TRAIN), w.numpy())
        np.testing.assert_allclose(trial.tensor("gradients/0.weight").value(step, mode=TRAIN), grad.numpy(),
                                   rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(trial.tensor("2/output_0").value(step, mode=TRAIN), out0.numpy(), rtol=1e-6)
    assert trial.tensor("gradients/0.weight").steps(mode=TRAIN) == [0, 1, 2]   # once per optimizer step


def test_driven_grad_cam_explains_the_steps_first_batch(run_dir):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4))
    hook = tt.Hook(run_dir, include_collections=[tt.Collection("feature_maps", ["^1$"])],
                   save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    hook.drive_steps()
    before = copy.deepcopy(model.state_dict())
    xs = [torch.rand(2, 3, 8, 8) for _ in range(2)]
    for x in xs:   # two micro-batches of step 0
        hook.begin_step(TRAIN, step=0)
        model(x).sum().backward()
    hook.close()
    trial = tt.create_trial(run_dir)
    images = trial.tensor("gradcam/images").value(0)
    first = xs[0].permute(0, 2, 3, 1).numpy()
    lo, hi = first.min(axis=(1, 2, 3), keepdims=True), first.max(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(images, (first - lo) / (hi - lo), rtol=1e-5, atol=1e-6)   # min-max scaled
    cam = tt.explain.gradcam(_copy_with(model, before), xs[0], target_layer="1")
    np.testing.assert_allclose(trial.tensor("gradcam/1/cam").value(0), cam.raw, rtol=1e-4, atol=1e-6)


def _copy_with(model: nn.Module, state: dict) -> nn.Module:
    twin = copy.deepcopy(model)
    twin.load_state_dict(state)
    return twin
