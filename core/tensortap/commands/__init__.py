"""Sub-commands of the `tensortap` CLI, one module each."""
