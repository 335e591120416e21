"""The head view says so when a run saved no token strings: its labels are then positions."""
from __future__ import annotations

import numpy as np

import tensortap as tt
from tensortap.vis.attention import NO_TOKENS


def _run(path: str, tokens: bool) -> str:
    hook = tt.Hook(path, include_collections=["attention"], save_config=tt.SaveConfig(save_interval=1))
    if tokens:
        hook.set_tokens([["[CLS]", "red", "car"]])
    hook.begin_step(tt.modes.TRAIN)
    hook.save_tensor("attention/layer0", np.full((1, 2, 3, 3), 1 / 3, np.float32), collections=["attention"])
    hook.close()
    return path


def test_without_tokens_the_head_view_and_png_say_they_show_positions(tmp_path):
    vis = tt.vis.get("attention")()
    bare = _run(str(tmp_path / "bare"), tokens=False)
    html = open(str(vis.render(bare, str(tmp_path / "bare.html"))), encoding="utf-8").read()
    assert NO_TOKENS in html and "hook.set_tokens" in html
    with_tokens = _run(str(tmp_path / "tok"), tokens=True)
    html = open(str(vis.render(with_tokens, str(tmp_path / "tok.html"))), encoding="utf-8").read()
    assert NO_TOKENS not in html and "red" in html
    assert vis.render(bare, str(tmp_path / "bare.png"))   # the PNG title says it too (positions)
