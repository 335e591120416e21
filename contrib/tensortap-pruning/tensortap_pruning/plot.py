"""The `pruning` visualizer: tensortap's accuracy-against-parameters plot, on the scalars this
plugin's pruner saves (also a table of the iterations in `tensortap report`)."""
from __future__ import annotations

from tensortap.vis.pruning import PruningVisualizer

from .scalars import SCALARS


class PruningPlot(PruningVisualizer):
    """Accuracy against parameter count and against model size over pruning iterations
    (each point labelled with its iteration), plus accuracy per iteration.

    Options: accuracy, params, size_mb (the scalars' names, default pruning/accuracy,
    pruning/params, pruning/size_mb), log_x (parameter axis in log scale).
    """

    name = "pruning"
    scalars = dict(SCALARS)
