"""The torch conformance kit: fc1 Linear(8, 16) -> ReLU -> fc2 Linear(16, 4), plain SGD."""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from tensortap.testing.conformance import N_HIDDEN, N_IN, N_OUT, ConformanceKit


def _mlp_class():
    from torch import nn

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(N_IN, N_HIDDEN)
            self.relu = nn.ReLU()
            self.fc2 = nn.Linear(N_HIDDEN, N_OUT)

        def forward(self, x):
            return self.fc2(self.relu(self.fc1(x)))

    return MLP


class Kit(ConformanceKit):
    framework = "torch"
    requires = ("torch",)

    def param_names(self) -> Dict[str, str]:
        return {k: k for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")}

    def output_name(self, layer: str) -> str:
        return f"{layer}/output_0"

    def make_model(self, seed: int = 0) -> Any:
        import torch

        torch.manual_seed(seed)
        return _mlp_class()()

    def train(self, hook, model: Any, data, lr: float = 0.1) -> List[dict]:
        import torch

        hook.register(model)
        loss_fn = torch.nn.CrossEntropyLoss()
        hook.register_loss(loss_fn)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        snaps = []
        for x, y in data:
            params = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
            opt.zero_grad()
            loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y))
            loss.backward()
            grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
            snaps.append({"params": params, "grads": grads, "loss": float(np.float32(loss.item()))})
            opt.step()
        return snaps
