"""tensortap plugin for torch. Users need not import it: tt.Hook(...).register(model) finds it."""
__version__ = "0.1.0"
