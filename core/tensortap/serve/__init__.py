"""`tensortap serve`: a live, read-only local web page of one run or a folder of runs.

    from tensortap.serve import Server
    with Server("runs/") as s:     # serves in background threads until the block ends
        print(s.url)

Built on the standard library (http.server, threads, server-sent events): no dependency beyond
the core's, and every asset ships in the package.
"""
from .server import Server
from .state import RunState, run_state

__all__ = ["Server", "RunState", "run_state"]
