"""The configuration of `tensortap run`: TOML / JSON / YAML mirroring tt.Hook, smdebug's JSON hook
configuration with smdebug's meanings, and every bad input named with its file and line."""
from __future__ import annotations

import json
import sys

import pytest

import tensortap as tt
from tensortap.compat.smdebug.save_config import SaveConfig as SmdSaveConfig
from tensortap.zerocode.config import load

TOML = """\
out_dir = "runs/exp1"
include_collections = ["weights", "gradients", "losses"]

[save_config]
save_interval = 10
[save_config.eval]
save_interval = 2

[reduction_config]
reductions = ["mean", "std"]

[[collections]]
name = "relu_activations"
include_regex = ["relu"]
save_config = { save_steps = [1, 2] }

[[rules]]
name = "loss_not_decreasing"
params = { num_steps = 20 }
actions = ["log", "stop_training"]
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_toml_mirrors_hook_arguments(tmp_path):
    cfg = load(write(tmp_path, "tensortap.toml", TOML))
    assert cfg.out_dir == "runs/exp1"
    hook = cfg.make_hook(str(tmp_path / "run"))
    try:
        assert [c.name for c in hook.collections] == ["weights", "gradients", "losses", "relu_activations"]
        relu = hook.get_collection("relu_activations")
        assert relu.include_regex == ("relu",) and relu.save_config.for_mode("train").save_steps == (1, 2)
        sc = hook.save_config
        assert sc.for_mode("train").save_interval == 10 and sc.for_mode("eval").save_interval == 2
        assert hook.reduction_config.reductions == ("mean", "std")
        rules = hook._rules.rules
        assert [r.name for r, _ in rules] == ["loss_not_decreasing"] and rules[0][0].num_steps == 20
        assert [a.name for a in rules[0][1]] == ["log", "stop_training"]
    finally:
        hook.close()


def test_json_and_yaml_mean_the_same(tmp_path):
    data = {"out_dir": "r", "include_collections": ["weights"], "save_config": {"save_steps": [0, 5]},
            "rules": [{"name": "vanishing_gradient", "params": {"threshold": 1e-5}, "actions": "log"}]}
    a = load(write(tmp_path, "c.json", json.dumps(data, indent=1)))
    yaml = pytest.importorskip("yaml")
    b = load(write(tmp_path, "c.yaml", yaml.safe_dump(data)))
    for cfg in (a, b):
        assert cfg.include_collections == ["weights"] and cfg.save_config.for_mode("train").save_steps == (0, 5)
        assert cfg.rules[0].params == {"threshold": 1e-5} and cfg.rules[0].actions == ["log"]


@pytest.mark.parametrize("text,line,message", [
    ('out_dir = "r"\n[save_config]\nsave_intervl = 10\n', 3,
     "unknown key 'save_intervl' in [save_config]. Did you mean \"save_interval\"?"),
    ('out_dir = "r"\ninclude_colections = ["weights"]\n', 2,
     "unknown key 'include_colections' in the configuration. Did you mean \"include_collections\"?"),
    ('out_dir = "r"\n\n[[rules]]\nname = "loss_not_decreasing"\nparams = { num_step = 20 }\n', 5,
     "rule 'loss_not_decreasing' has no parameter 'num_step'. Did you mean \"num_steps\"?"),
    ('out_dir = "r"\n[[rules]]\nname = "vanishing_gradiant"\n', 3,
     "unknown rule 'vanishing_gradiant'. Did you mean \"vanishing_gradient\"?"),
    ('[[rules]]\nname = "vanishing_gradient"\nactions = ["stop_trainin"]\n', 3,
     "unknown action 'stop_trainin'. Did you mean \"stop_training\"?"),
    ('[reduction_config]\nreductions = ["meen"]\n', 1, "unknown reduction 'meen'. Did you mean \"mean\"?"),
    ('[save_config]\nsave_interval = 0\n', 1, "save_interval must be a positive int"),
    ('out_dir = "r"\nsave_config = [\n', 2, "not valid TOML"),
])
def test_bad_toml_names_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, "bad.toml", text)
    with pytest.raises(tt.ConfigError) as e:
        load(path)
    assert str(e.value).startswith(f"{path}:{line}: ")
    assert message in str(e.value)


def test_bad_json_and_yaml_name_file_and_line(tmp_path):
    path = write(tmp_path, "bad.json", '{\n  "out_dir": "r",\n  "save_all": true,\n  "save_al": 1\n}\n')
    with pytest.raises(tt.ConfigError, match=r'bad.json:4: unknown key \'save_al\'.*Did you mean "save_all"'):
        load(path)
    pytest.importorskip("yaml")
    path = write(tmp_path, "bad.yaml", "out_dir: r\nsave_config:\n  save_intervl: 3\n")
    with pytest.raises(tt.ConfigError, match=r'bad.yaml:3: unknown key \'save_intervl\'.*Did you mean "save_interval"'):
        load(path)


def test_yaml_without_pyyaml_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(tt.ConfigError, match=r"c.yaml: reading YAML needs PyYAML \(pip install pyyaml\); or write "
                                             r"the configuration as TOML or JSON"):
        load(write(tmp_path, "c.yaml", "out_dir: r\n"))


SMDEBUG = {
    "LocalPath": "/tmp/smd-run",
    "HookParameters": {"save_interval": "4", "start_step": "2", "eval.save_interval": "1",
                       "reductions": "max,abs_mean,l2_norm", "include_regex": "fc1.*, relu", "include_workers": "all"},
    "CollectionConfigurations": [
        {"CollectionName": "weights"},
        {"CollectionName": "gradients", "CollectionParameters": {"save_interval": "3", "save_steps": "1,50"}},
        {"CollectionName": "relu_activations", "CollectionParameters": {"include_regex": "relu",
                                                                        "reductions": "min"}},
    ],
}


def test_smdebug_json_means_what_smdebug_made_of_it(tmp_path):
    cfg = load(write(tmp_path, "debughookconfig.json", json.dumps(SMDEBUG)))
    assert cfg.fmt == "smdebug-json" and cfg.out_dir == "/tmp/smd-run" and cfg.include_workers == "all"
    hook = cfg.make_hook(str(tmp_path / "run"))
    try:
        colls = {c.name: c for c in hook.collections}
        # the configured collections, "losses"/"metrics" always (smdebug's framework defaults),
        # "default" for include_regex
        assert list(colls) == ["weights", "gradients", "relu_activations", "losses", "metrics", "default"]
        assert colls["default"].include_regex == ("fc1.*", "relu")
        # smdebug's step rule: step % interval == 0 inside [start_step, end); the interval is not
        # counted from start_step
        train = [s for s in range(20) if colls["weights"].save_config.should_save("train", s)]
        assert train == [4, 8, 12, 16]
        assert [s for s in range(5) if colls["weights"].save_config.should_save("eval", s)] == [2, 3, 4]
        # a collection's own keys override the hook's, mode by mode; listed steps even outside the range
        grads = [s for s in range(20) if colls["gradients"].save_config.should_save("train", s)]
        assert grads == [1, 3, 6, 9, 12, 15, 18]
        # ... and its plain keys win over the hook's "eval." ones too (smdebug merged them that way)
        assert [s for s in range(5) if colls["gradients"].save_config.should_save("eval", s)] == [1, 3]
        assert hook.reduction_config.reductions == ("max", "abs_mean", "l2")
        assert colls["relu_activations"].reduction_config.reductions == ("min",)
        assert colls["relu_activations"].include_regex == ("relu",)
        # losses and metrics are saved in full whatever the reductions, as smdebug did
        assert colls["losses"].reduction_config.save_raw_tensor and colls["losses"].reduction_config.reductions == ()
    finally:
        hook.close()


def test_smdebug_save_config_rule_against_a_reference():
    """smdebug 1.0.34's SaveConfigMode.should_save_step, written out here as the reference."""
    def reference(step, interval=500, start=0, end=None, steps=()):
        return step in steps or (step >= start and (end is None or step < end) and step % interval == 0)

    for kw in ({}, {"save_interval": 7, "start_step": 3, "end_step": 40}, {"save_interval": 5, "save_steps": [2, 99]},
               {"save_interval": "6", "start_step": "13", "save_steps": "1,4"}):
        sc = SmdSaveConfig(**kw)
        ref = dict(interval=int(kw.get("save_interval", 500)), start=int(kw.get("start_step", 0)),
                   end=kw.get("end_step"),
                   steps=[int(s) for s in (kw["save_steps"].split(",") if isinstance(kw.get("save_steps"), str)
                                           else kw.get("save_steps", []))])
        assert [s for s in range(1200) if sc.should_save("train", s)] == \
               [s for s in range(1200) if reference(s, **ref)], kw


def test_smdebug_json_bad_input(tmp_path):
    bad = dict(SMDEBUG, HookParameters={"save_intervall": "4"})
    path = write(tmp_path, "debughookconfig.json", json.dumps(bad, indent=2))
    with pytest.raises(tt.ConfigError, match=r"debughookconfig.json:4: unknown key 'save_intervall' in HookParameters. "
                                             r'Did you mean "save_interval"\?'):
        load(path)
    bad = dict(SMDEBUG, HookParameters={"reductions": "prod"})
    with pytest.raises(tt.ConfigError, match="reduction 'prod' has no counterpart in tensortap"):
        load(write(tmp_path, "d2.json", json.dumps(bad, indent=2)))


def test_run_directory_defaults_and_an_existing_run_is_refused(tmp_path):
    from tensortap.zerocode.prepare import prepare

    empty = write(tmp_path, "defaults.json", "{}")
    assert prepare(empty, None, "tensortap-runs/train-1")["out_dir"] == "tensortap-runs/train-1"
    assert prepare(write(tmp_path, "c.toml", 'out_dir = "mine"\n'), None, "x")["out_dir"] == "mine"
    with pytest.raises(tt.ConfigError, match="out_dir is not set"):
        prepare(empty)
    run = str(tmp_path / "run")
    tt.Hook(run).close()
    with pytest.raises(tt.ConfigError, match="already holds a run; give each run a new directory"):
        prepare(empty, run)
