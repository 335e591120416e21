"""`tensortap rules list [--json]` and `tensortap rules run RUN --rule NAME [--param k=v ...] [--follow]`.

Exit status of `rules run`: 0 quiet (it checked data and nothing fired), 1 the rule fired, 2 error,
3 nothing to check (every evaluation was skipped, or there was none)."""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, List


def register(sub) -> None:
    p = sub.add_parser("rules", help="list rules, or run one over a run (finished or live)")
    rsub = p.add_subparsers(dest="rules_command", metavar="ACTION")
    pl = rsub.add_parser("list", help="every registered rule with its parameters and defaults")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.set_defaults(func=run_list)
    pr = rsub.add_parser("run", help="evaluate a rule over a run; exit 0 = quiet (it checked data), 1 = fired, "
                         "2 = error, 3 = nothing to check")
    pr.add_argument("run", help="run directory or fsspec URL")
    pr.add_argument("--rule", default=None, help="rule name (see `tensortap rules list`)")
    pr.add_argument("--rule-file", default=None, metavar="FILE",
                    help="a Python file defining the rule instead (a tensortap Rule, or a rule written for smdebug)")
    pr.add_argument("--rule-class", default=None, metavar="NAME", help="with --rule-file: which of its rule classes")
    pr.add_argument("--param", action="append", default=[], metavar="K=V",
                    help="rule parameter; V is read as JSON when it parses (1e-7, true, [1,2]), else as text")
    pr.add_argument("--start-step", type=int, default=0)
    pr.add_argument("--end-step", type=int, default=None, help="stop before this step")
    pr.add_argument("--follow", action="store_true", help="keep evaluating new steps until the run closes "
                    "(exit 2 if its writer dies without closing it)")
    pr.add_argument("--timeout", type=float, default=None, help="with --follow: give up after this many seconds")
    pr.add_argument("--all", action="store_true", help="print every evaluation, not only firings")
    pr.add_argument("--json", action="store_true", help="one JSON object: every result and a summary")
    pr.set_defaults(func=run_rule)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def parse_value(text: str) -> Any:
    """JSON when it parses, Python-style True/False/None, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    return {"True": True, "False": False, "None": None}.get(text, text)


def parse_params(items: List[str]) -> Dict[str, Any]:
    from ..errors import ConfigError

    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k.strip():
            raise ConfigError(f"--param {it!r}: use NAME=VALUE, e.g. --param threshold=1e-6")
        out[k.strip()] = parse_value(v)
    return out


def rule_from_args(args):
    """--rule NAME, or --rule-file FILE [--rule-class NAME], with the --param values."""
    from ..errors import ConfigError

    if (args.rule is None) == (args.rule_file is None):
        raise ConfigError("pass --rule NAME (see `tensortap rules list`) or --rule-file FILE [--rule-class NAME]")
    if args.rule_file is not None:
        from ..rules.rulefile import load_rule_file

        return load_rule_file(args.rule_file, args.rule_class, parse_params(args.param))
    from ..rules import make_rule

    return make_rule(args.rule, parse_params(args.param))


def rule_table() -> List[dict]:
    from .. import rules
    from ..plugins import get_registry

    reg = get_registry()
    out = []
    for n in rules.list():
        cls = rules.get(n)
        owner = reg.owner.get(("rules", n))
        out.append({"name": n, "description": " ".join(cls.describe().split()), "params": cls.params(),
                    "distribution": owner.distribution if owner else "?", "plugin": owner.name if owner else "?"})
    return out


def run_list(args) -> int:
    table = rule_table()
    if args.json:
        print(json.dumps(table, indent=1, default=repr))
        return 0
    for r in table:
        src = "" if r["distribution"] == "tensortap" else f"  [{r['distribution']}]"
        print(f"{r['name']}{src}\n    {r['description']}")
        if r["params"]:
            print("    " + ", ".join(f"{k}={v!r}" for k, v in r["params"].items()))
    return 0


#: exit status of `rules run` per summary state
EXIT = {"quiet": 0, "fired": 1, "no data": 3}


def run_rule(args) -> int:
    from ..rules import invoke_rule
    from ..rules.outcomes import RuleSummary, step_label, summarise
    from ..trial import create_trial

    rule = rule_from_args(args)
    wait = 0.0 if not args.follow else 30.0 if args.timeout is None else min(30.0, args.timeout)
    trial = create_trial(args.run, wait_seconds=wait)
    results = invoke_rule(rule, trial, start_step=args.start_step, end_step=args.end_step,
                          follow=args.follow, timeout=args.timeout)
    summary = (summarise(results) or [RuleSummary(rule.name)])[0]
    fired = [r for r in results if r.fired]
    if args.json:
        print(json.dumps({"rule": rule.name, "run": trial.path, "state": summary.state,
                          "evaluations": len(results), "fired": summary.fired, "quiet": summary.quiet,
                          "skipped": summary.skipped, "checked": summary.checked,
                          "skip_reasons": summary.to_dict()["skip_reasons"],
                          "first_fired_step": fired[0].step if fired else None,
                          "results": [dict(r.to_record(), step_label=step_label(trial, r.step)) for r in results]},
                         indent=1, default=str))
    else:
        for r in results:
            if r.fired or args.all:
                tag = {"fired": "FIRED", "quiet": "quiet", "skipped": "skip "}[r.outcome]
                checked = f" [checked {r.checked}]" if r.outcome == "quiet" and r.checked is not None else ""
                print(f"{tag} {step_label(trial, r.step)}{checked}: {r.message}")
        print(summary.line(trial), file=sys.stderr)
    if args.follow and not trial.is_complete():
        trial.check_writer()  # a writer gone without closing the run: WriterGoneError, exit 2
    return EXIT[summary.state]
