"""`tensortap serve PATH`: a live local page of one run, a folder of runs, or an s3:// prefix."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("serve", help="a live local web page of a run or a folder of runs (read-only)",
                       description="Serve a live page of PATH (a run, a folder of runs, or an fsspec URL such as "
                                   "s3://bucket/prefix) at http://127.0.0.1:PORT. New steps, rule results and runs "
                                   "show within 2 s. Any --host but loopback needs a token (given, or generated "
                                   "and printed in the URL).")
    p.add_argument("path", help="run directory, folder of runs, or fsspec URL")
    p.add_argument("--port", type=int, default=6007, help="port to listen on (default 6007; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; any other needs a token)")
    p.add_argument("--token", default=None,
                   help="access token the page's URL must carry (generated when --host is not loopback)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.add_argument("--interval", type=float, default=None,
                   help="seconds between checks for new data (default 0.5 locally, 2 on object stores)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..serve import Server

    server = Server(args.path, host=args.host, port=args.port, token=args.token, interval=args.interval)
    print(f"tensortap serve: {args.path}")
    print(f"  open {server.url}", flush=True)
    if server.token is not None and server.host not in ("127.0.0.1", "localhost", "::1"):
        print("  anyone who can reach this address and knows the token can read these runs", flush=True)
    print("  (read-only; Ctrl-C stops it)", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    return 0
