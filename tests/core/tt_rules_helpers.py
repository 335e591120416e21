"""Shared helpers for the rule tests: training loops that really train (numpy MLP, small torch
models saved by hand through the Hook) and a one-call rule evaluation."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

import tensortap as tt
from tensortap.testing import NumpyMLP, make_data

ALL = ("weights", "biases", "gradients", "inputs", "outputs", "losses")


def mlp_run(run_dir: str, steps: int = 30, lr: float = 0.5, seed: int = 0, batch: int = 32, n_hidden: int = 16,
            data: Optional[Tuple[np.ndarray, np.ndarray]] = None, setup: Optional[Callable] = None,
            before_step: Optional[Callable] = None, eval_data=None, eval_every: int = 0,
            labels: bool = False, rules: Sequence = (), include=ALL, close: bool = True):
    """Train the numpy MLP for `steps` train steps (minibatches cycling over `data`), every
    `eval_every` steps evaluating on `eval_data` (EVAL-mode steps). `setup(model)` changes the
    model first; `before_step(model, step, x)` may inject faults. Returns (hook, model, losses)."""
    model = NumpyMLP(n_in=8, n_hidden=n_hidden, n_out=4, seed=seed)
    if setup is not None:
        setup(model)
    hook = tt.Hook(run_dir, include_collections=list(include), save_config=tt.SaveConfig(save_interval=1))
    for r in rules:
        hook.add_rule(*r) if isinstance(r, tuple) else hook.add_rule(r)
    hook.register(model)
    hook.register_loss(model)
    x, y = data if data is not None else make_data(256, seed=seed + 1)
    losses = []
    for i in range(steps):
        lo = (i * batch) % len(x)
        xb, yb = x[lo:lo + batch], y[lo:lo + batch]
        if before_step is not None:
            changed = before_step(model, i, xb.copy())
            xb = xb if changed is None else changed
        out = model.forward(xb)
        losses.append(model.loss(out, yb))
        if labels:
            hook.save_tensor("labels", yb, collections=["labels"])
            hook.save_tensor("predictions", out.argmax(1), collections=["predictions"])
        model.backward()
        model.sgd_step(lr)
        if eval_every and (i + 1) % eval_every == 0:
            model.eval()
            xe, ye = eval_data
            out = model.forward(xe)
            model.loss(out, ye)
            if labels:
                hook.save_tensor("labels", ye, collections=["labels"])
                hook.save_tensor("predictions", out.argmax(1), collections=["predictions"])
            model.train()
    if close:
        hook.close()
    return hook, model, losses


def evaluate(rule, run_dir: str, **kw) -> List[tt.rules.RuleResult]:
    return tt.invoke_rule(rule, tt.create_trial(run_dir), **kw)


def first_fired(results) -> Optional[int]:
    fired = [r.step for r in results if r.fired]
    return fired[0] if fired else None


def assert_quiet(results) -> None:
    fired = [(r.step, r.message) for r in results if r.fired]
    assert not fired, f"fired on a healthy run: {fired[:3]}"
    assert any(not r.skipped for r in results), "the rule never evaluated anything"


def torch_run(run_dir: str, model, data, steps: int = 10, lr: float = 0.1, batch: int = 32, loss_fn=None,
              layers: Sequence[str] = (), rules: Sequence = (), extra: Optional[Callable] = None):
    """Train a torch model, saving weights, gradients, losses and the inputs/outputs of `layers`
    through the Hook by hand (hook.begin_step / save_tensor / record_loss): a real run without
    the torch plugin. `extra(hook, x, y, out)` may save more tensors. Returns the losses."""
    import torch

    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    hook = tt.Hook(run_dir, include_collections=list(ALL), save_config=tt.SaveConfig(save_interval=1))
    for r in rules:
        hook.add_rule(*r) if isinstance(r, tuple) else hook.add_rule(r)
    mods = dict(model.named_modules())
    handles = []
    for name in layers:
        def fwd(mod, inp, out, name=name):
            hook.save_tensor(f"{name}/input_0", inp[0].detach().numpy().copy(), collections=["inputs"])
            hook.save_tensor(f"{name}/output_0", out.detach().numpy().copy(), collections=["outputs"])
        handles.append(mods[name].register_forward_hook(fwd))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = data
    losses = []
    try:
        for i in range(steps):
            hook.begin_step(tt.modes.TRAIN)
            lo = (i * batch) % len(x)
            xb, yb = x[lo:lo + batch], y[lo:lo + batch]
            for n, p in model.named_parameters():
                hook.save_tensor(n, p.detach().numpy().copy(), collections=["weights"])
            out = model(xb)
            loss = loss_fn(out, yb)
            opt.zero_grad()
            loss.backward()
            for n, p in model.named_parameters():
                if p.grad is not None:
                    hook.save_tensor(f"gradients/{n}", p.grad.detach().numpy().copy(), collections=["gradients"])
            hook.record_loss(loss.item())
            if extra is not None:
                extra(hook, xb, yb, out)
            losses.append(loss.item())
            opt.step()
    finally:
        for h in handles:
            h.remove()
        hook.close()
    return losses
