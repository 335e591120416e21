"""The parts of `smdebug.core` scripts and rules import: modes, collection keys, configs."""
