"""What `tensortap run` prints when the script has ended: the run's path and the rules' summary,
or, when nothing could be instrumented, a warning saying what was looked for."""
from __future__ import annotations

import glob
import json
import os
import shutil
import sys
from typing import Any, Dict, List, Optional, TextIO


def read_statuses(status_dir: str) -> List[Dict[str, Any]]:
    """The status file every process of the run left at exit (unreadable ones are skipped)."""
    out = []
    for p in sorted(glob.glob(os.path.join(status_dir, "*.json"))):
        try:
            with open(p, encoding="utf-8") as f:
                out.append(json.load(f))
        except (OSError, ValueError):
            continue
    return out


def all_looks_for() -> List[str]:
    """What every installed plugin's instrumentation looks for (read without the frameworks)."""
    from ..plugins import get_registry

    out: List[str] = []
    for spec in get_registry().adapters.values():
        if spec.instrument:
            try:
                out += list(spec.load_instrument().looks_for)
            except Exception as e:  # noqa: BLE001
                out.append(f"({spec.name}: its instrumentation could not be loaded: {e})")
    return out


def rules_summary(trial) -> List[str]:
    """One line per rule the run evaluated live, as `tensortap rules run` ends with it (fired,
    quiet, or no data with why; steps named as `tensortap ls` names them), and the first firing's message."""
    from ..rules.outcomes import summarise

    lines = []
    for s in summarise(trial.rule_results()):
        lines.append(f"{s.state:<8} {s.line(trial)}")
        if s.first_fired is not None:
            lines.append(f"         first firing: {s.first_fired.get('message', '')}")
    return lines


def summarize(statuses: List[Dict[str, Any]], out_dir: str, stream: Optional[TextIO] = None) -> bool:
    """Print the summary; True when a run was written."""
    stream = stream or sys.stderr

    def say(line: str) -> None:
        print(f"tensortap: {line}", file=stream)

    attached = [a for s in statuses for a in s.get("attached", [])]
    errors = sorted({e for s in statuses for e in s.get("errors", [])})
    if not attached:
        imported = sorted({m for s in statuses for m in s.get("imported", [])})
        looked = list(dict.fromkeys(t for s in statuses for t in s.get("looked_for", []))) or all_looks_for()
        say(f"warning: nothing was instrumented, so no run was written to {out_dir}.")
        if imported:
            say(f"the script imported {', '.join(imported)}, but tensortap found none of:")
        else:
            say("the script imported none of the frameworks tensortap instruments; it looks for:")
        for t in looked:
            print(f"  - {t}", file=stream)
        for e in errors:
            say(f"error: {e}")
        return False
    from ..errors import TensorTapError
    from ..trial import create_trial

    try:
        trial = create_trial(out_dir)
    except TensorTapError as e:
        say(f"the run in {out_dir} cannot be read: {e}")
        return False
    steps, workers = trial.steps(), trial.workers()
    say(f"run written to {out_dir} ({len(workers)} worker{'s' if len(workers) != 1 else ''}, {len(steps)} saved "
        f"steps, {len(trial.tensor_names())} tensors; instrumented: {'; '.join(dict.fromkeys(attached))})")
    lines = rules_summary(trial)
    say("rules: none evaluated" if not lines else "rules:")
    for line in lines:
        print(f"  {line}", file=stream)
    for ev in trial.events():
        if ev.get("event") == "stop_requested":
            say(f"training was stopped ({ev.get('worker')}): {ev.get('detail')}")
    for err in errors:
        say(f"error: {err}")
    return True


def finish(status_dir: str, out_dir: str, cleanup: bool = False) -> bool:
    """Summarise the run whose processes left their status in `status_dir`."""
    try:
        return summarize(read_statuses(status_dir), out_dir)
    finally:
        if cleanup:
            shutil.rmtree(status_dir, ignore_errors=True)
