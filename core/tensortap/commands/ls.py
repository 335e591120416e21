"""`tensortap ls RUN`: what a run holds (tensortap.summary): steps, workers, collections, tensor
count and bytes, rule outcomes and firings, events and problems."""
from __future__ import annotations

import json

from ..summary import human_size, run_summary


def register(sub) -> None:
    p = sub.add_parser("ls", help="summarise a run: steps, workers, collections, tensors, bytes")
    p.add_argument("run", help="run directory or fsspec URL")
    p.add_argument("--tensors", action="store_true", help="also list every tensor name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..trial import create_trial

    trial = create_trial(args.run)
    s = run_summary(trial)
    if args.tensors:
        s["tensor_names"] = trial.tensor_names()
    if args.json:
        print(json.dumps(s, indent=1, default=str))
        return 0
    print(f"run        {s['run']}  ({'complete' if s['complete'] else 'in progress or interrupted'})")
    print(f"framework  {s['framework']}")
    print(f"workers    {len(s['workers'])}: {', '.join(s['workers'])}")
    span = f" ({s['first_step']}..{s['last_step']})" if s["steps"] else ""
    per_mode = ", ".join(f"{m} {n}" for m, n in s["steps_per_mode"].items())
    print(f"steps      {s['steps']}{span}" + (f"  [{per_mode}]" if per_mode else ""))
    print(f"tensors    {s['tensors']}, {human_size(s['bytes'])}")
    print("collections " + ", ".join(f"{c} ({n})" for c, n in s["collections"].items()))
    if s["rule_evaluations"]:
        n = {k: sum(p[k] for p in s["rules"]) for k in ("quiet", "skipped")}
        print(f"rules      {s['rule_evaluations']} evaluations, {len(s['rules_fired'])} fired, {n['quiet']} quiet, "
              f"{n['skipped']} skipped (nothing to check)")
        for p in s["rules"]:
            reasons = "; ".join(list(p["skip_reasons"])[:2])
            print(f"  {p['state']:<8} {p['rule']}: {p['fired']} fired, {p['quiet']} quiet, {p['skipped']} skipped"
                  + (f" ({reasons})" if p["state"] == "no data" and reasons else ""))
        for r in s["rules_fired"][:20]:
            print(f"  fired    {r['rule']} at {r['step_label']}: {r['message']}")
    for e in s["events"][:20]:
        what = e.get("what") or e.get("detail") or e.get("why", "")
        print(f"event      {e.get('event')}: {what} {e.get('error', '')}")
    for p in s["problems"][:20]:
        print(f"problem    {p}")
    if args.tensors:
        for n in s["tensor_names"]:
            print(f"  {n}")
    return 0
