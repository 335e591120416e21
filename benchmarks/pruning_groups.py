"""Channel groups tensortap-pruning can prune on models built like torchvision's mobilenet_v2,
densenet121, googlenet and vgg11_bn (full sizes, examples/common/archs.py), and, when Torch-Pruning
is importable, the groups its DependencyGraph finds on the same models (an optional comparison:
Torch-Pruning is never a dependency of tensortap).

    python benchmarks/pruning_groups.py
    # with Torch-Pruning in a venv of its own that sees this torch:
    /path/to/venv/bin/python benchmarks/pruning_groups.py

Each model is also pruned (a third of every prunable group, ranked at random) and run once to
check it keeps its output shape.
"""
from __future__ import annotations

import os
import sys
import time
from collections import Counter

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

from examples.common import archs  # noqa: E402
from tensortap_pruning import analyse, count_params, remove_channels  # noqa: E402

MODELS = {
    "mobilenet_v2": lambda: archs.MobileNetV2(1000),
    "densenet121": lambda: archs.DenseNet(1000),
    "googlenet": lambda: archs.GoogLeNet(1000),
    "vgg11_bn": lambda: archs.VGG(1000),
}


def torch_pruning_groups(model: nn.Module, x: torch.Tensor, head: nn.Module):
    """How many groups Torch-Pruning's DependencyGraph yields (its classifier ignored), or None."""
    try:
        import torch_pruning as tp
    except ImportError:
        return None
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    return len(list(dg.get_all_groups(ignored_layers=[head], root_module_types=[nn.Conv2d, nn.Linear])))


def third(g) -> list:
    block = g.size // g.slots
    k = max(1, block // 3) if block > 2 else 0
    return [j * block + i for j in range(g.slots) for i in range(k)]


def main() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    x = torch.randn(1, 3, 64, 64)
    try:
        import torch_pruning as tp
        tp_version = getattr(tp, "__version__", "?")
    except ImportError:
        tp_version = None
    print(f"torch {torch.__version__}; Torch-Pruning {tp_version or 'not installed (comparison skipped)'}")
    print(f"{'model':14s} {'groups':>6s} {'prunable':>8s} {'torch-pruning':>13s}  frozen (why)  "
          "| params before -> after, output")
    for name, make in MODELS.items():
        model = make().eval()
        t = time.perf_counter()
        groups = analyse(model, x)
        took = time.perf_counter() - t
        ours = [g for g in groups if g.prunable]
        why = Counter(g.frozen for g in groups if not g.prunable)
        head = model.fc if hasattr(model, "fc") else (
            model.classifier[-1] if isinstance(model.classifier, nn.Sequential) else model.classifier)
        theirs = torch_pruning_groups(model, x, head)
        before = count_params(model)
        for g in ours:
            remove_channels(model, g, third(g))
        with torch.no_grad():
            shape = tuple(model(x).shape)
        print(f"{name:14s} {len(groups):6d} {len(ours):8d} {theirs if theirs is not None else '-':>13}  "
              f"{dict(why)} | {before:,} -> {count_params(model):,}, {shape} ({took:.1f} s analysis)")


if __name__ == "__main__":
    main()
