"""Exports of a run to other tools' formats (TensorBoard event files)."""
from .tensorboard import export_tensorboard
from .tfevents import EventWriter

__all__ = ["export_tensorboard", "EventWriter"]
