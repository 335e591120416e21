"""tensortap-torch states the torch versions it supports and checks them when it loads torch: outside
the range one warning (naming the version, the range and the fix) and training goes on; inside, nothing."""
from __future__ import annotations

from tests.conftest import require

require("torch")

from tests.version_check import HOOK_ARGS, expected_warning, run_with_versions, version_warnings  # noqa: E402

TRAIN = """
import sys, torch, tensortap as tt
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
hook = tt.Hook(HOOK_ARGS)
hook.register(model)
hook.register(model)  # registered again: still one message
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
for _ in range(3):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    hook.record_loss(loss)
    loss.backward()
    opt.step()
hook.close()
trial = tt.create_trial(sys.argv[1])
print("steps", trial.steps(), len(trial.tensor_names(collection="gradients")))
""".replace("HOOK_ARGS", HOOK_ARGS)


def test_a_torch_outside_the_range_gets_one_warning_and_training_goes_on(tmp_path):
    fake = "3.0.0"
    r = run_with_versions(TRAIN, {"torch": fake}, str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert version_warnings(r.stderr) == [expected_warning("tensortap-torch", "torch", ">=2.1,<3", fake)]
    assert "steps [0, 1, 2] 4" in r.stdout


def test_the_installed_torch_is_in_the_range_and_nothing_is_said(tmp_path):
    r = run_with_versions(TRAIN, {}, str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert version_warnings(r.stderr) == [] and "Warning" not in r.stderr, r.stderr
    assert "steps [0, 1, 2] 4" in r.stdout
