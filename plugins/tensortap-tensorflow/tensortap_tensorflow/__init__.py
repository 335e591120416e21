"""tensortap plugin for tensorflow. Users need not import it: tt.Hook(...).register(model) finds it."""
__version__ = "0.1.0"


def watch_gradcam(hook, images, target_layer, targets=None) -> None:
    """Save Grad-CAM maps of `images` (NHWC) for `target_layer` on every saved TRAIN step of
    `model.fit` (after that step's update), in collection "feature_maps" with the names
    tensortap.explain.record_gradcam uses (so the `gradcam` visualizer draws them)."""
    hook.extra("watch_gradcam")(images, target_layer, targets)
