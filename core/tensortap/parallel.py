"""Analyse a run on many cores or machines with Dask: rules and per-step computations
split into chunks of steps, each chunk opening its own Trial (cheap: index only).

    from dask.distributed import Client
    client = Client()                       # a LocalCluster, or a real cluster's address
    results = tt.parallel.invoke_rule_parallel("all_zero", "s3://bucket/run", client=client)

Workers must reach the run (a shared path or an object store) and have the same plugins
installed. A rule is rebuilt in each task from its name (plus params) or from a picklable
zero-argument factory; results equal a serial `invoke_rule` for rules whose verdict at a
step depends only on what the trial holds (every built-in except stalled_training, which
watches the wall clock).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

from .errors import ConfigError

RuleSpec = Union[str, type, Callable[[], Any]]


def _make_rule(spec: RuleSpec, params: Optional[dict]):
    from .rules import Rule, get

    if isinstance(spec, str):
        return get(spec)(**(params or {}))
    if isinstance(spec, type) and issubclass(spec, Rule):
        return spec(**(params or {}))
    if callable(spec):
        rule = spec()
        if not isinstance(rule, Rule):
            raise ConfigError(f"the rule factory returned {rule!r}, not a tt.rules.Rule")
        return rule
    raise ConfigError(f"pass a rule name, a Rule subclass, or a zero-argument factory; got {spec!r}")


def _chunk_rule(spec: RuleSpec, params: Optional[dict], path: str, steps: Sequence[int]) -> List[dict]:
    from .trial import Trial

    rule = _make_rule(spec, params)
    trial = Trial(path)
    return [rule.invoke(trial, s).__dict__ for s in steps]


def _chunk_map(fn: Callable, path: str, steps: Sequence[int]) -> Dict[int, Any]:
    from .trial import Trial

    trial = Trial(path)
    return {s: fn(trial, s) for s in steps}


def _chunks(steps: List[int], n: int) -> List[List[int]]:
    n = max(1, min(n, len(steps)))
    size = -(-len(steps) // n)
    return [steps[i:i + size] for i in range(0, len(steps), size)]


def _client_and_chunks(client, n_chunks: Optional[int]):
    if client is None:
        raise ConfigError("pass a dask.distributed Client (e.g. Client(LocalCluster(n_workers=2)))")
    if n_chunks is None:
        n_chunks = 4 * max(1, sum(client.nthreads().values()))
    return n_chunks


def invoke_rule_parallel(rule: RuleSpec, path: str, client, params: Optional[dict] = None, start_step: int = 0,
                         end_step: Optional[int] = None, n_chunks: Optional[int] = None) -> list:
    """Evaluate a rule over every saved step in [start_step, end_step) on a Dask cluster;
    returns RuleResults in step order, like tt.invoke_rule."""
    from .rules import RuleResult
    from .trial import Trial

    _make_rule(rule, params)  # fail here, not in a worker, on a bad name or parameter
    steps = [s for s in Trial(path).steps() if s >= start_step and (end_step is None or s < end_step)]
    if not steps:
        return []
    n = _client_and_chunks(client, n_chunks)
    futures = [client.submit(_chunk_rule, rule, params, path, c, pure=False) for c in _chunks(steps, n)]
    out: List[RuleResult] = []
    for part in client.gather(futures):
        out.extend(RuleResult(**d) for d in part)
    return sorted(out, key=lambda r: r.step)


def map_steps(fn: Callable[[Any, int], Any], path: str, client, steps: Optional[Iterable[int]] = None,
              n_chunks: Optional[int] = None) -> Dict[int, Any]:
    """{step: fn(trial, step)} computed on a Dask cluster (report data preparation, custom analyses)."""
    from .trial import Trial

    steps = sorted(steps) if steps is not None else Trial(path).steps()
    if not steps:
        return {}
    n = _client_and_chunks(client, n_chunks)
    futures = [client.submit(_chunk_map, fn, path, c, pure=False) for c in _chunks(steps, n)]
    out: Dict[int, Any] = {}
    for part in client.gather(futures):
        out.update(part)
    return out
