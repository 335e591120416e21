"""tensortap's start-up hook for `tensortap run`: this directory goes first on the child's
PYTHONPATH. It activates tensortap's boot module (standard library only), then runs the
sitecustomize this one shadows, if there is one further along sys.path."""
import importlib.machinery
import importlib.util
import os
import sys


def _tensortap_start() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(os.path.dirname(here), "boot.py")
    boot = sys.modules.get("_tensortap_boot")
    if boot is None:
        spec = importlib.util.spec_from_file_location("_tensortap_boot", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"tensortap: cannot load its boot module {path}")
        boot = importlib.util.module_from_spec(spec)
        sys.modules["_tensortap_boot"] = boot
        spec.loader.exec_module(boot)
    boot.activate()
    if __name__ != "sitecustomize":  # run from tensortap-autorun.pth: it shadows nothing
        return
    others = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is not None and spec.loader is not None:
        user = importlib.util.module_from_spec(spec)
        sys.modules["sitecustomize"] = user
        spec.loader.exec_module(user)


try:
    _tensortap_start()
except Exception as _e:  # noqa: BLE001 - start-up must go on; say why tensortap is not there
    sys.stderr.write(f"tensortap: start-up failed ({type(_e).__name__}: {_e}); the script runs without tensortap\n")
