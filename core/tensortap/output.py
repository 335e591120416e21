"""Where a Hook's run goes: the run folder (checked when the Hook is made), this worker's claim on
it (taken then too: a second writer is refused at once), the store writer (made at the first
write, with the run's meta), the errors recorded in it, and what happens after each saved step
(live rules, plugins' `tensortap_step_end`)."""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Dict, Optional

from .capture.errors import ErrorReporter
from .store import StepBatch, StoreWriter
from .store.claim import WorkerClaim

if TYPE_CHECKING:  # pragma: no cover
    from .hook import Hook
    from .plugins import Registry

log = logging.getLogger("tensortap")


def _env_int(var: str) -> Optional[int]:
    v = os.environ.get(var)
    return int(v) if v is not None and v.strip().isdigit() else None


def env_rank() -> Optional[int]:
    """This process's global rank from the launcher's variables: torchrun/MPI/SLURM name it; a
    launcher that only sets LOCAL_RANK and NODE_RANK (Lightning's ddp subprocess launcher) gives it
    on node 0, or on any node when LOCAL_WORLD_SIZE says how many processes a node runs."""
    for var in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"):
        rank = _env_int(var)
        if rank is not None:
            return rank
    local, node, per_node = _env_int("LOCAL_RANK"), _env_int("NODE_RANK") or 0, _env_int("LOCAL_WORLD_SIZE")
    if local is None:
        return None
    if per_node is not None:
        return node * per_node + local
    return local if node == 0 else None


class RunOutput:
    """One Hook's run on disk. `hook` is read for the run's meta (its adapter, framework,
    collections, save config) when the writer is made, and passed to plugins' behaviour hooks.
    `claim=False` (a dry_run Hook) claims nothing and must never be opened."""

    def __init__(self, hook: "Hook", rank: Optional[int], registry: "Registry", writer_options: Dict[str, Any],
                 claim: bool = True) -> None:
        self.out_dir = hook.out_dir
        self.reporter = ErrorReporter(self.record_if_open)
        self.writer: Optional[StoreWriter] = None
        self.rules: Any = None  # rules.live.LiveRules, made by the first add_rule
        self.needs: Any = None  # rules.requirements.NeedsCheck, made with it
        self._hook = hook
        self._rank = rank
        self._registry = registry
        self._writer_options = writer_options
        self.claim: Optional[WorkerClaim] = WorkerClaim.acquire(self.out_dir, self._initial_rank()) if claim else None

    def _initial_rank(self) -> int:
        """The rank to claim at creation: rank=, else the framework's (a plugin that sees its
        distributed job already set up), else the launcher's variables, else 0."""
        if self._rank is not None:
            return int(self._rank)
        try:
            rank = self._registry.pm.hook.tensortap_process_rank()
        except Exception as e:  # noqa: BLE001 - a plugin's failure only loses the hint
            log.warning("tensortap: a plugin failed to tell this process's rank: %s", e)
            rank = None
        if rank is None:
            rank = env_rank()
        return int(rank or 0)

    def open(self) -> StoreWriter:
        """The run's writer, made now if it is not yet (the first write, or register)."""
        if self.writer is None:
            if self.claim is None:
                raise RuntimeError(f"tensortap: the dry_run run output of {self.out_dir} cannot be written")
            hook = self._hook
            adapter = hook.adapter
            rank = self._rank
            if rank is None and adapter is not None:
                rank = adapter.rank()
            if rank is None:
                rank = env_rank() or 0
            meta = {
                "framework": adapter.name if adapter is not None else hook.framework,
                "rank": rank,
                "world_size": adapter.world_size() if adapter is not None else 1,
                "collections": {c.name: {"include_regex": list(c.include_regex)} for c in hook.collections},
                "save_config": hook.save_config.to_dict(),
            }
            if rank != self.claim.rank:  # the framework's rank differs from the one guessed at creation
                claim = WorkerClaim.acquire(self.out_dir, rank)
                self.claim.release(remove=True)
                self.claim = claim
            self.writer = StoreWriter(self.out_dir, rank, meta, on_error=self.reporter.report, claim=self.claim,
                                      **self._writer_options)
        return self.writer

    def record(self, record: Dict[str, Any]) -> None:
        """Add an index record to the run (the writer is made if need be)."""
        self.open().submit_record(record)

    def record_if_open(self, record: Dict[str, Any]) -> None:
        """Add an index record to the run if its writer exists (errors and events never make one)."""
        w = self.writer
        if w is not None:
            w.submit_record(record)

    def step_done(self, batch: StepBatch) -> None:
        """A finished step: to the writer, then to the live rules and plugins' tensortap_step_end."""
        if not (batch.items and self.open().submit(batch)):
            return
        if self.rules is not None:
            if self.needs is not None and self.needs.pending:  # the layers are known by now
                try:
                    self.needs.step_saved()
                except Exception as e:  # noqa: BLE001 - a rule's declaration must not stop training
                    self.reporter.report("could not check what the live rules read", e)
            self.rules.step_saved(batch.step)
        self._registry.call_behaviour("tensortap_step_end", hook=self._hook, step=batch.step, mode=batch.mode)
