"""`tensortap export-tensorboard RUN --out DIR [--follow]`: scalars, histograms and Grad-CAM images as
tfevents. Exporting again into DIR replaces the earlier export; --follow appends a live run's new steps."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("export-tensorboard",
                       help="write a run as TensorBoard event files (view: tensorboard --logdir DIR)")
    p.add_argument("run", help="run directory or fsspec URL")
    p.add_argument("--out", "-o", required=True, help="TensorBoard log directory to write (one sub-directory per mode)")
    p.add_argument("--no-histograms", action="store_true", help="skip histograms of weights/biases/gradients")
    p.add_argument("--no-images", action="store_true", help="skip Grad-CAM images")
    p.add_argument("--no-reductions", action="store_true", help="skip scalar reductions (<tensor>/<reduction>)")
    p.add_argument("--histograms-regex", default=None, help="histogram these tensors instead (regex)")
    p.add_argument("--bins", type=int, default=30, help="histogram bins for full tensors (default 30)")
    p.add_argument("--follow", action="store_true",
                   help="keep exporting a live run as it grows, until it is closed (or --timeout)")
    p.add_argument("--poll", type=float, default=1.0, help="with --follow: seconds between looks for new steps")
    p.add_argument("--timeout", type=float, default=None, help="with --follow: stop after this many seconds")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..export import export_tensorboard

    def batch(n: int, last: int) -> None:
        print(f"exported {n} new step{'s' if n != 1 else ''} (up to step {last})", flush=True)

    if args.follow:
        print(f"following {args.run}: new steps are appended as they are written (Ctrl-C stops)", flush=True)
    try:
        counts = export_tensorboard(args.run, args.out, histograms=not args.no_histograms, images=not args.no_images,
                                    reductions=not args.no_reductions, hist_regex=args.histograms_regex,
                                    bins=args.bins, follow=args.follow, poll=args.poll, timeout=args.timeout,
                                    on_batch=batch)
    except KeyboardInterrupt:
        print("stopped; what was exported so far is in " + args.out)
        return 0
    for mode, c in counts.items():
        print(f"{mode:8s} {c['events']} steps: {c['scalars']} scalars, {c['histograms']} histograms, "
              f"{c['images']} images -> {c['file']}")
    print(f"view with: tensorboard --logdir {args.out}")
    return 0
