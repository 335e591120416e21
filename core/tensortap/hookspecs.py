"""Every pluggy hook spec of tensortap: the whole plugin contract, in one file.

A plugin is a module (or object) with functions marked `@tensortap.hookimpl` whose names
match these specs, registered by its distribution under the entry-point group
"tensortap":

    [project.entry-points.tensortap]
    my_plugin = "my_package.plugin_module"

Registration hooks return lists; names must be unique across all plugins.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from .adapter import AdapterSpec
    from .collections import Collection
    from .hook import Hook
    from .vector_reductions import VectorReduction

PROJECT = "tensortap"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def tensortap_register_adapters() -> List["AdapterSpec"]:
    """Framework adapters this plugin provides, as `tensortap.AdapterSpec` objects.

    Example::

        @tensortap.hookimpl
        def tensortap_register_adapters():
            return [tensortap.AdapterSpec(name="torch", model_modules=("torch",),
                                          adapter="tensortap_torch.adapter:TorchAdapter")]
    """


@hookspec
def tensortap_register_collections() -> List["Collection"]:
    """Extra default collections, e.g. `tt.Collection("attention", description=...)`.

    Example::

        @tensortap.hookimpl
        def tensortap_register_collections():
            return [tensortap.Collection("attention", description="attention probabilities")]
    """


@hookspec
def tensortap_register_rules() -> List[type]:
    """`tensortap.rules.Rule` subclasses, each with a unique class attribute `name`.

    Example::

        @tensortap.hookimpl
        def tensortap_register_rules():
            return [BigWeights]
    """


@hookspec
def tensortap_register_visualizers() -> List[type]:
    """`tensortap.vis.Visualizer` subclasses, each with a unique class attribute `name`.

    Example::

        @tensortap.hookimpl
        def tensortap_register_visualizers():
            return [MyPlot]
    """


@hookspec
def tensortap_register_actions() -> List[type]:
    """`tensortap.rules.Action` subclasses (what happens when a rule fires), each with a `name`.

    Example::

        @tensortap.hookimpl
        def tensortap_register_actions():
            return [PageOnCall]
    """


@hookspec
def tensortap_register_reductions() -> List["VectorReduction"]:
    """Reductions that give one small vector per captured tensor per saved step, as
    `tensortap.VectorReduction` objects, each with a unique `name` (not a built-in one). Users
    list the name in `tt.ReductionConfig(reductions=[...])`; the vector is stored instead of the
    tensor and read back with `Tensor.reduction_value(step, name)`. `numpy` always computes it;
    `implementations` may add a framework's own, run where the tensor lives. With
    `inputs=("value", "gradient")` it takes the captured tensor and its gradient from the same step.

    Example::

        @tensortap.hookimpl
        def tensortap_register_reductions():
            return [tensortap.VectorReduction(
                name="channel_taylor", inputs=("value", "gradient"),
                numpy="my_plugin.importance:taylor_numpy",        # (activation, gradient) -> (channels,)
                implementations={"torch": "my_plugin.importance:taylor_torch"},
                description="|activation x gradient| per channel")]
    """


@hookspec
def tensortap_step_end(hook: "Hook", step: int, mode: str) -> None:
    """Called after a saved step was handed to the writer (behaviour hook; return value ignored).

    Example::

        @tensortap.hookimpl
        def tensortap_step_end(hook, step, mode):
            print("saved", step)
    """


@hookspec
def tensortap_run_closed(hook: "Hook", out_dir: str) -> None:
    """Called once when a Hook closed its run (all data written).

    Example::

        @tensortap.hookimpl
        def tensortap_run_closed(hook, out_dir):
            print("run complete:", out_dir)
    """


@hookspec(firstresult=True)
def tensortap_process_rank() -> Optional[int]:
    """The rank of this process in a distributed job its framework has already set up, or None.

    Asked when a Hook is created without `rank=` and no launcher variable (RANK, ...) says it, so
    that the Hook claims its own worker of the run at once. Must not import the framework (look
    in sys.modules) and must be cheap. Example::

        @tensortap.hookimpl
        def tensortap_process_rank():
            dist = sys.modules.get("torch.distributed")
            return dist.get_rank() if dist is not None and dist.is_initialized() else None
    """
