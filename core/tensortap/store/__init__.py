"""The crash-safe store: framed records, an index, an async writer and a tailing reader."""
from .reader import WorkerReader
from .writer import StepBatch, StoreWriter, TensorItem, WriterStats

__all__ = ["StoreWriter", "StepBatch", "TensorItem", "WriterStats", "WorkerReader"]
