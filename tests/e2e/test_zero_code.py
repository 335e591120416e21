"""`tensortap run`: unmodified scripts of each framework give the same run (tensor names, steps,
modes, values bit-exact) as the same script with an explicit tt.Hook written into it: for a PyTorch
loop, a hook whose TRAIN steps the script drives by hand at its optimizer steps (hook.drive_steps,
begin_step before the step's forward, capture_gradients before optimizer.step()), and for Gluon
the same at trainer.step(); for Keras, `hook.register(model)`. The child's exit code is kept; a
rule's stop ends the script cleanly at an optimizer step boundary; torchrun gives one worker per
rank; DataLoader workers get no hook; a bad configuration stops before the script starts; a script
with nothing to instrument ends with a warning saying what was looked for."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tensortap as tt
from tests.gloo_exit import ATTEMPTS, launch_retrying_exit_abort

TIMEOUT = 300


def run(args, env=None, cwd=None, timeout=TIMEOUT):
    e = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", **(env or {}))
    for k in ("TENSORTAP_CONFIG", "TENSORTAP_RUN_PREPARED", "TENSORTAP_RUN_STATUS", "TENSORTAP_RUN_OUT", "RANK"):
        if k not in (env or {}):
            e.pop(k, None)
    return subprocess.run(args, env=e, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def tensortap_run(*args, **kw):
    return run([sys.executable, "-m", "tensortap", "run", *args], **kw)


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def assert_same_run(a: str, b: str, clock: str = "") -> None:
    """Same steps, modes, tensor names, collections, and values bit-exact (except the values of the
    names that regex `clock` matches: wall-clock figures a trainer logs, such as train_runtime)."""
    ta, tb = tt.create_trial(a), tt.create_trial(b)
    assert ta.steps() == tb.steps() and ta.steps()
    assert [ta.mode(s) for s in ta.steps()] == [tb.mode(s) for s in tb.steps()]
    assert ta.tensor_names() == tb.tensor_names() and ta.tensor_names()
    assert ta.collections() == tb.collections()
    for name in ta.tensor_names():
        assert ta.tensor(name).steps() == tb.tensor(name).steps(), name
        if clock and re.search(clock, name):
            continue
        for s in ta.tensor(name).steps(kind="value"):
            va, vb = ta.tensor(name).value(s), tb.tensor(name).value(s)
            assert va.dtype == vb.dtype and va.shape == vb.shape and va.tobytes() == vb.tobytes(), (name, s)


TWIN_CONFIG = """\
include_collections = ["weights", "biases", "gradients", "losses", "outputs"]
[save_config]
save_interval = 3
"""

TORCH_SCRIPT = """\
import os, sys
import torch
from torch import nn

EXPLICIT = os.environ.get("TWIN_OUT")  # the twin: the same script with an explicit tt.Hook driving its steps
torch.manual_seed(0)
torch.set_num_threads(1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


model = Net()
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
crit = nn.CrossEntropyLoss()
if EXPLICIT:
    import tensortap as tt
    hook = tt.Hook(EXPLICIT, include_collections=["weights", "biases", "gradients", "losses", "outputs"],
                   save_config=tt.SaveConfig(save_interval=3))
    hook.register(model)
    hook.register_loss(crit)
    hook.drive_steps([tt.modes.TRAIN])  # one TRAIN step per optimizer step; eval forwards start EVAL steps
g = torch.Generator().manual_seed(1)
x, y = torch.randn(96, 8, generator=g), torch.randint(0, 4, (96,), generator=g)
step = 0
for epoch in range(2):
    model.train()
    for i in range(0, 80, 16):
        opt.zero_grad()
        if EXPLICIT:
            hook.begin_step(tt.modes.TRAIN, step=step)
        loss = crit(model(x[i:i + 16]), y[i:i + 16])
        loss.backward()
        if EXPLICIT:
            hook.capture_gradients()  # what the optimizer applies
        opt.step()
        step += 1
    model.eval()
    with torch.no_grad():
        model(x[80:])
if EXPLICIT:
    hook.close()
print("trained")
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""


def test_torch_loop_same_run_as_explicit_hook_and_exit_code_kept(tmp_path):
    pytest.importorskip("torch")
    script = write(tmp_path, "train.py", TORCH_SCRIPT)
    cfg = write(tmp_path, "tensortap.toml", TWIN_CONFIG)
    zero, twin = str(tmp_path / "zero"), str(tmp_path / "twin")
    r = tensortap_run("--config", cfg, "--out", zero, "--", sys.executable, script, env={"EXIT_CODE": "3"})
    assert r.returncode == 3, r.stderr  # the script's own exit status
    assert "trained" in r.stdout
    assert f"tensortap: run written to {zero} (1 worker, " in r.stderr and "Net (the parameters of SGD)" in r.stderr
    t = run([sys.executable, script], env={"TWIN_OUT": twin})
    assert t.returncode == 0, t.stderr
    assert_same_run(zero, twin)
    trial = tt.create_trial(zero)
    assert trial.steps(mode="train") == [0, 3, 6, 9] and trial.steps(mode="eval") == [0]
    assert "act/output_0" in trial.tensor_names()


KERAS_SCRIPT = """\
import os
import numpy as np
import keras

EXPLICIT = os.environ.get("TWIN_OUT")
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="hidden"),
                          keras.layers.Dense(4, name="logits")])
model.compile(optimizer=keras.optimizers.SGD(0.05), metrics=["accuracy"],
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
if EXPLICIT:
    import tensortap as tt
    hook = tt.Hook(EXPLICIT, include_collections=["weights", "biases", "gradients", "losses", "outputs"],
                   save_config=tt.SaveConfig(save_interval=3))
    hook.register(model)
rng = np.random.default_rng(1)
x, y = rng.standard_normal((96, 8)).astype("float32"), rng.integers(0, 4, 96)
model.fit(x[:80], y[:80], batch_size=16, epochs=2, verbose=0, shuffle=False)
model.evaluate(x[80:], y[80:], batch_size=8, verbose=0)
np.save(os.environ["PREDICTED"], model.predict(x[80:], batch_size=4, verbose=0))
if EXPLICIT:
    hook.close()
print("trained")
"""


def test_keras_fit_same_run_as_explicit_hook(tmp_path):
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed in this venv")
    script = write(tmp_path, "train.py", KERAS_SCRIPT)
    cfg = write(tmp_path, "tensortap.toml", TWIN_CONFIG)
    zero, twin = str(tmp_path / "zero"), str(tmp_path / "twin")
    predicted = str(tmp_path / "predicted.npy")
    r = tensortap_run("--config", cfg, "--out", zero, "--", sys.executable, script, env={"PREDICTED": predicted})
    assert r.returncode == 0 and "trained" in r.stdout, r.stderr
    t = run([sys.executable, script], env={"TWIN_OUT": twin, "PREDICTED": str(tmp_path / "twin.npy")})
    assert t.returncode == 0, t.stderr
    assert_same_run(zero, twin)  # PREDICT steps included
    trial = tt.create_trial(zero)
    assert trial.steps(mode="train") == [0, 3, 6, 9] and trial.steps(mode="eval") == [0]
    assert trial.steps(mode="predict") == [0, 3]  # model.predict: 4 batches of 4, every 3rd saved
    assert "gradients/sequential/hidden/kernel" in trial.tensor_names()
    # the logits captured at PREDICT steps are what predict() returned for those batches
    logits, want = trial.tensor("sequential/logits/output_0"), np.load(predicted)
    for s in (0, 3):
        assert logits.value(s, mode="predict").tobytes() == want[4 * s:4 * s + 4].tobytes()


GLUON_SCRIPT = """\
import os
import mxnet as mx
from mxnet import autograd, gluon, nd

EXPLICIT = os.environ.get("TWIN_OUT")
mx.random.seed(0)
net = gluon.nn.HybridSequential()
net.add(gluon.nn.Dense(16, activation="relu"), gluon.nn.Dense(4))
net.initialize(mx.init.Xavier())
loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
if EXPLICIT:
    import tensortap as tt
    hook = tt.Hook(EXPLICIT, include_collections=["weights", "biases", "gradients", "losses", "outputs"],
                   save_config=tt.SaveConfig(save_interval=3))
    hook.register(net)
    hook.register_loss(loss_fn)
    hook.drive_steps([tt.modes.TRAIN])  # one TRAIN step per trainer.step(); eval forwards start EVAL steps
trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.05, "momentum": 0.9})
x = nd.random.normal(shape=(96, 8))
y = nd.array([i % 4 for i in range(96)])
step = 0
for epoch in range(2):
    for i in range(0, 80, 16):
        if EXPLICIT:
            hook.begin_step(tt.modes.TRAIN, step=step)
        with autograd.record():
            loss = loss_fn(net(x[i:i + 16]), y[i:i + 16])
        loss.backward()
        if EXPLICIT:
            hook.capture_gradients()  # what the trainer applies
        trainer.step(16)
        step += 1
    net(x[80:])
if EXPLICIT:
    hook.close()
print("trained")
"""


def test_gluon_same_run_as_explicit_hook(tmp_path):
    if importlib.util.find_spec("mxnet") is None:
        pytest.skip("mxnet is not installed in this venv")
    script = write(tmp_path, "train.py", GLUON_SCRIPT)
    cfg = write(tmp_path, "tensortap.toml", TWIN_CONFIG)
    zero, twin = str(tmp_path / "zero"), str(tmp_path / "twin")
    r = tensortap_run("--config", cfg, "--out", zero, "--", sys.executable, script)
    assert r.returncode == 0 and "trained" in r.stdout, r.stderr
    t = run([sys.executable, script], env={"TWIN_OUT": twin})
    assert t.returncode == 0, t.stderr
    assert_same_run(zero, twin)
    trial = tt.create_trial(zero)
    assert "gradients/dense0_weight" in trial.tensor_names() and "loss" in trial.tensor_names()
    assert trial.steps(mode="train") == [0, 3, 6, 9] and trial.steps(mode="eval") == [0]
    assert "one step per trainer.step()" not in r.stderr and "HybridSequential (the parameters of gluon.Trainer)" \
        in r.stderr


def test_nothing_to_instrument_warns_and_keeps_exit_code(tmp_path):
    script = write(tmp_path, "plain.py", "import sys, json\nprint('ran')\nsys.exit(7)\n")
    r = tensortap_run("--out", str(tmp_path / "run"), "--", sys.executable, script)
    assert r.returncode == 7 and "ran" in r.stdout
    assert "warning: nothing was instrumented, so no run was written" in r.stderr
    assert "imported none of the frameworks tensortap instruments" in r.stderr
    assert "a torch.optim optimizer built over the parameters of a torch.nn.Module" in r.stderr
    assert not os.path.exists(str(tmp_path / "run"))


def test_bad_config_stops_before_the_script_starts(tmp_path):
    cfg = write(tmp_path, "bad.toml", "include_collections = ['weights']\n[save_config]\nsave_intervl = 3\n")
    marker = str(tmp_path / "started")
    script = write(tmp_path, "s.py", f"open({marker!r}, 'w').close()\n")
    r = tensortap_run("--config", cfg, "--", sys.executable, script)
    assert r.returncode == 2
    assert f"{cfg}:3: unknown key 'save_intervl' in [save_config]. Did you mean \"save_interval\"?" in r.stderr
    assert not os.path.exists(marker)
    # the same without the wrapper (TENSORTAP_CONFIG alone, through tensortap-autorun.pth)
    r = run(_pth_launcher(tmp_path, script), env={"TENSORTAP_CONFIG": cfg})
    assert r.returncode == 2 and "unknown key 'save_intervl'" in r.stderr and not os.path.exists(marker)


def _pth_launcher(tmp_path, script: str, *args: str):
    """A Python process that reads tensortap-autorun.pth as site-packages would, then runs `script`:
    the real thing where the distribution is installed with it, else the same file processed by
    site.addsitedir (what the interpreter does with site-packages at start-up)."""
    import site

    for d in site.getsitepackages():
        if os.path.exists(os.path.join(d, "tensortap-autorun.pth")):
            return [sys.executable, script, *args]
    pth = os.path.join(os.path.dirname(tt.__file__), "zerocode", "tensortap-autorun.pth")
    sitedir = tmp_path / "site-packages"
    sitedir.mkdir(exist_ok=True)
    (sitedir / "tensortap-autorun.pth").write_text(open(pth).read())
    code = (f"import site, sys, runpy; site.addsitedir({str(sitedir)!r}); sys.argv = {[script, *args]!r}; "
            f"runpy.run_path({script!r}, run_name='__main__')")
    return [sys.executable, "-c", code]


def test_tensortap_config_alone_without_the_wrapper(tmp_path):
    pytest.importorskip("torch")
    script = write(tmp_path, "train.py", TORCH_SCRIPT)
    out = str(tmp_path / "run")
    cfg = write(tmp_path, "tensortap.toml", f"out_dir = {out!r}\n" + TWIN_CONFIG)
    r = run(_pth_launcher(tmp_path, script), env={"TENSORTAP_CONFIG": cfg})
    assert r.returncode == 0, r.stderr
    assert f"tensortap: run written to {out}" in r.stderr
    trial = tt.create_trial(out)
    assert trial.steps(mode="train") == [0, 3, 6, 9] and "gradients/fc1.weight" in trial.tensor_names()


STOP_SCRIPT = """\
import atexit, time
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
opt = torch.optim.Adam(model.parameters(), lr=0.01)
sched = torch.optim.lr_scheduler.StepLR(opt, 100)
# at exit: the optimizer steps applied (Adam counts them) and the iterations that ran to their end
atexit.register(lambda: print("applied", int(opt.state[model[0].weight]["step"]), "completed", sched.last_epoch))
for step in range(3000):
    opt.zero_grad()
    model(torch.randn(4, 4)).pow(2).mean().backward()
    opt.step()
    time.sleep(0.005)
    sched.step()
print("finished all steps")
"""


def run_with_stop_rule(tmp_path, script: str, out: str):
    """`script` under tensortap run with a rule that fires at the first saved step and stops training."""
    cfg = write(tmp_path, "tensortap.toml", """\
        include_collections = ["gradients"]
        [save_config]
        save_interval = 5
        [[rules]]
        name = "vanishing_gradient"
        params = { threshold = 1e9 }
        actions = ["stop_training"]
        """)
    return tensortap_run("--config", cfg, "--out", out, "--", sys.executable, script,
                         env={"TENSORTAP_LIVE_RULES": "thread"})


def test_stop_training_ends_the_script_cleanly(tmp_path):
    pytest.importorskip("torch")
    script = write(tmp_path, "train.py", STOP_SCRIPT)
    out = str(tmp_path / "run")
    r = run_with_stop_rule(tmp_path, script, out)
    assert r.returncode == 0, r.stderr
    assert "finished all steps" not in r.stdout
    assert "tensortap: training stopped: rule vanishing_gradient fired at step 0" in r.stderr
    assert "Traceback" not in r.stderr
    assert "vanishing_gradient: " in r.stderr and "first at step 0" in r.stderr  # the rules' summary
    # it stopped at an optimizer step boundary: every applied step's iteration ran to its end
    applied, completed = (int(v) for v in r.stdout.split("applied ")[1].split()[::2])
    assert applied == completed > 0
    assert tt.create_trial(out).is_complete()  # the run was closed at exit


def test_user_sitecustomize_still_runs_and_python_m(tmp_path):
    """tensortap's start-up goes first on PYTHONPATH; the user's own sitecustomize still runs."""
    user = tmp_path / "usersite"
    user.mkdir()
    (user / "sitecustomize.py").write_text("import os\nos.environ['USER_SITECUSTOMIZE'] = 'ran'\n")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "main.py").write_text("import os, sys\nprint(os.environ.get('USER_SITECUSTOMIZE'), "
                                 "'_tensortap_boot' in sys.modules)\n")
    pp = os.pathsep.join([str(user), os.environ.get("PYTHONPATH", "")])
    r = tensortap_run("--out", str(tmp_path / "run"), "--", sys.executable, "-m", "pkg.main", cwd=str(tmp_path),
                      env={"PYTHONPATH": pp})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ran", "True"]


DDP_SCRIPT = """\
import os
import torch
import torch.distributed as dist
from torch import nn

dist.init_process_group("gloo")
torch.manual_seed(0)
model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
g = torch.Generator().manual_seed(dist.get_rank())
for step in range(4):
    opt.zero_grad()
    model(torch.randn(8, 4, generator=g)).pow(2).mean().backward()
    opt.step()
dist.destroy_process_group()
"""


def test_torchrun_two_processes_give_two_workers(tmp_path):
    pytest.importorskip("torch")
    script = write(tmp_path, "ddp.py", DDP_SCRIPT)
    cfg = write(tmp_path, "tensortap.toml", 'include_collections = ["weights", "losses"]\n'
                                            "[save_config]\nsave_interval = 1\n")
    outs = [str(tmp_path / f"run{a}") for a in range(ATTEMPTS)]

    def launch(attempt: int):
        r = tensortap_run("--config", cfg, "--out", outs[attempt], "--", sys.executable, "-m",
                          "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script)
        return r.returncode, r.stderr

    attempt, code, log = launch_retrying_exit_abort(launch)
    assert code == 0, log[-3000:]
    out = outs[attempt]
    trial = tt.create_trial(out)
    assert trial.workers() == ["worker-0", "worker-1"] and trial.is_complete()
    assert trial.steps() == [0, 1, 2, 3]
    for s in trial.steps():  # DDP keeps the replicas equal: both ranks saw the same weights
        w = [trial.tensor("0.weight").value(s, worker=w) for w in trial.workers()]
        assert w[0].tobytes() == w[1].tobytes()
    losses = [float(trial.tensor("loss").value(0, worker=w)) for w in trial.workers()]
    assert losses[0] != losses[1]  # each rank its own data


LOADER_SCRIPT = """\
import json, os, sys
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import tensortap.zerocode as zc

LOG = sys.argv[1]


class Data(Dataset):
    def __len__(self):
        return 32

    def __getitem__(self, i):
        with open(os.path.join(LOG, f"{os.getpid()}.json"), "w") as f:
            json.dump({"hook": zc.active_hook() is not None}, f)
        g = torch.Generator().manual_seed(i)
        return torch.randn(4, generator=g), i % 2


if __name__ == "__main__":
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    crit = nn.CrossEntropyLoss()
    for ctx in ("fork", "spawn"):
        for x, y in DataLoader(Data(), batch_size=8, num_workers=2, multiprocessing_context=ctx):
            opt.zero_grad()
            crit(model(x), y).backward()
            opt.step()
    with open(os.path.join(LOG, "main.json"), "w") as f:
        json.dump({"pid": os.getpid(), "hook": zc.active_hook() is not None}, f)
"""


def test_dataloader_workers_get_no_hook(tmp_path):
    pytest.importorskip("torch")
    write(tmp_path, "loader_train.py", LOADER_SCRIPT)
    log = tmp_path / "log"
    log.mkdir()
    out = str(tmp_path / "run")
    cfg = write(tmp_path, "tensortap.toml", 'include_collections = ["weights", "losses"]\n'
                                            "[save_config]\nsave_interval = 1\n")
    r = tensortap_run("--config", cfg, "--out", out, "--", sys.executable, "-m", "loader_train", str(log),
                      cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    main = json.loads((log / "main.json").read_text())
    workers = {p.stem: json.loads(p.read_text()) for p in log.glob("*.json") if p.stem != "main"}
    assert main["hook"] is True
    assert len(workers) == 4 and str(main["pid"]) not in workers  # 2 forked + 2 spawned workers
    assert not any(w["hook"] for w in workers.values())
    trial = tt.create_trial(out)
    assert trial.workers() == ["worker-0"] and trial.steps() == list(range(8))
