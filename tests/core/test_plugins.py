"""Plugin discovery as a third party would ship one: real dist-info directories (METADATA +
entry_points.txt) on sys.path, each check in a fresh subprocess so the registry loads anew."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

RULE = '''
import tensortap
from tensortap.rules import Rule

class {cls}(Rule):
    {name_line}

    def invoke_at_step(self, trial, step):
        return False
'''

PLUGINS = {
    # distribution name: (module name, module source)
    "tt-good": ("ttgood", RULE.format(cls="GoodRule", name_line='name = "good_rule"') + textwrap.dedent('''
        from tensortap.vis import Visualizer

        class GoodVis(Visualizer):
            name = "good_vis"

        @tensortap.hookimpl
        def tensortap_register_rules():
            return [GoodRule]

        @tensortap.hookimpl
        def tensortap_register_visualizers():
            return [GoodVis]

        @tensortap.hookimpl
        def tensortap_register_collections():
            return [tensortap.Collection("good_coll", include_regex=["^good"])]
        ''')),
    "tt-broken-import": ("ttbrokenimport", "import this_module_does_not_exist_anywhere\n"),
    "tt-unknown-hook": ("ttunknownhook", textwrap.dedent('''
        import tensortap

        @tensortap.hookimpl
        def tensortap_register_rulez():
            return []
        ''')),
    "tt-no-name": ("ttnoname", RULE.format(cls="NoName", name_line="pass") + textwrap.dedent('''
        @tensortap.hookimpl
        def tensortap_register_rules():
            return [NoName]
        ''')),
    "tt-dup-one": ("ttdupone", RULE.format(cls="Dup", name_line='name = "dup_rule"') + textwrap.dedent('''
        @tensortap.hookimpl
        def tensortap_register_rules():
            return [Dup]
        ''')),
    "tt-dup-two": ("ttduptwo", RULE.format(cls="Dup2", name_line='name = "dup_rule"') + textwrap.dedent('''
        @tensortap.hookimpl
        def tensortap_register_rules():
            return [Dup2]
        ''')),
}


def install(site, dist: str, module: str, source: str, ep_name=None) -> None:
    """What pip leaves behind: the module, and <dist>-<version>.dist-info with METADATA and entry points."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[tensortap]\n{ep_name or module} = {module}\n")
    (info / "RECORD").write_text("")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("site")
    for dist, (module, source) in PLUGINS.items():
        install(d, dist, module, source)
    return d


def pythonpath(site) -> str:
    """`site` first, then where this test imports tensortap from (a worktree's packages)."""
    return os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)


def cli(site, *args, **env):
    e = dict(os.environ, PYTHONPATH=pythonpath(site), TENSORTAP_STRICT_PLUGINS="", TENSORTAP_DISABLE_PLUGINS="")
    e.update(env)
    return subprocess.run([sys.executable, "-c", "import sys; from tensortap.cli import main; sys.exit(main())",
                           *args], capture_output=True, text=True, env=e, timeout=120)


def test_plugins_are_discovered_listed_and_broken_ones_reported(site):
    r = cli(site, "plugins", "--json")
    assert r.returncode == 0, r.stderr
    by_name = {p["name"]: p for p in json.loads(r.stdout)}
    good = by_name["ttgood"]
    assert good["distribution"] == "tt-good" and good["version"] == "1.2.3" and not good["builtin"]
    assert good["error"] is None
    assert good["registers"] == {"rules": ["good_rule"], "visualizers": ["good_vis"], "collections": ["good_coll"]}
    assert "import failed: ModuleNotFoundError" in by_name["ttbrokenimport"]["error"]
    err = by_name["ttunknownhook"]["error"]
    assert "unknown hook" in err and "tensortap_register_rulez" in err
    assert 'Did you mean "tensortap_register_rules"' in err
    assert "needs a class attribute `name`" in by_name["ttnoname"]["error"]
    assert by_name["ttdupone"]["error"] is None
    dup = by_name["ttduptwo"]["error"]
    assert "'tt-dup-one'" in dup and "'tt-dup-two'" in dup and "dup_rule" in dup
    # built-ins are listed as plugins too
    builtin = by_name["tensortap.collections"]
    assert builtin["builtin"] and "weights" in builtin["registers"]["collections"]
    # the text listing shows the same
    t = cli(site, "plugins")
    assert t.returncode == 0 and "ttgood  [plugin, tt-good 1.2.3]  ok" in t.stdout and "ERROR" in t.stdout


def test_plugin_registrations_are_usable(site):
    code = textwrap.dedent("""
        import tensortap as tt
        print(sorted(tt.rules.list()), sorted(tt.vis.list()))
        print(tt.rules.get("good_rule").__name__, tt.rules.get("dup_rule").__module__)
        h = tt.Hook(__import__("tempfile").mkdtemp() + "/run", include_collections=["good_coll"])
        print([c.name for c in h.collections]); h.close()
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=pythonpath(site)))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "'good_rule'" in lines[0] and "'good_vis'" in lines[0] and "'dup_rule'" in lines[0]
    assert lines[1] == "GoodRule ttdupone"  # the first registration kept
    assert lines[2] == "['good_coll']"
    assert "skipped" in r.stderr  # broken plugins are logged, not fatal


def test_strict_mode_makes_a_broken_plugin_fatal(site):
    r = cli(site, "plugins", TENSORTAP_STRICT_PLUGINS="1")
    assert r.returncode == 2
    assert "tensortap: error: plugin" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-c", "import tensortap as tt; tt.rules.list()"], capture_output=True,
                       text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=pythonpath(site), TENSORTAP_STRICT_PLUGINS="1"))
    assert r.returncode != 0 and "PluginError" in r.stderr


def test_disable_plugins_skips_them(site):
    disabled = "ttbrokenimport,tt-unknown-hook,ttnoname,tt-dup-two"  # entry-point or distribution names
    r = cli(site, "plugins", "--json", TENSORTAP_DISABLE_PLUGINS=disabled, TENSORTAP_STRICT_PLUGINS="1")
    assert r.returncode == 0, r.stderr
    by_name = {p["name"]: p for p in json.loads(r.stdout)}
    for n in ("ttbrokenimport", "ttunknownhook", "ttnoname", "ttduptwo"):
        assert by_name[n]["disabled"] and by_name[n]["error"] is None and by_name[n]["registers"] == {}
    assert by_name["ttgood"]["registers"]["rules"] == ["good_rule"]


def test_no_plugins_installed_still_works(tmp_path):
    r = cli(tmp_path, "plugins", "--json")
    assert r.returncode == 0
    names = {p["name"] for p in json.loads(r.stdout)}
    assert "tensortap.rules.builtin" in names and "ttgood" not in names


def test_plugins_env_loads_modules_that_are_not_installed(tmp_path):
    (tmp_path / "ttlocal.py").write_text(RULE.format(cls="Local", name_line='name = "local_rule"') + textwrap.dedent('''
        @tensortap.hookimpl
        def tensortap_register_rules():
            return [Local]
        '''))
    r = cli(tmp_path, "plugins", "--json", TENSORTAP_PLUGINS="ttlocal, ttmissing")
    assert r.returncode == 0, r.stderr
    by_name = {p["name"]: p for p in json.loads(r.stdout)}
    assert by_name["ttlocal"]["registers"] == {"rules": ["local_rule"]} and not by_name["ttlocal"]["builtin"]
    assert by_name["ttlocal"]["error"] is None
    assert "import failed: ModuleNotFoundError" in by_name["ttmissing"]["error"]
    r = cli(tmp_path, "plugins", "--json", TENSORTAP_PLUGINS="ttlocal", TENSORTAP_DISABLE_PLUGINS="ttlocal")
    assert [p["disabled"] for p in json.loads(r.stdout) if p["name"] == "ttlocal"] == [True]


def test_the_numpy_test_adapter_is_no_built_in(tmp_path):
    r = cli(tmp_path, "plugins", "--json", TENSORTAP_PLUGINS="")
    assert r.returncode == 0, r.stderr
    adapters = {a for p in json.loads(r.stdout) for a in p["registers"].get("adapters", [])}
    assert "numpy" not in adapters, adapters
    # a test session has it (tensortap.testing.fixtures registers it), for its subprocesses too
    r = cli(tmp_path, "plugins", "--json")
    numpy = [p for p in json.loads(r.stdout) if "numpy" in p["registers"].get("adapters", [])]
    assert [(p["name"], p["builtin"]) for p in numpy] == [("tensortap.testing.plugin", False)]
