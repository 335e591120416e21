"""Compatibility layers for scripts written against other tools' APIs (see `tensortap.compat.smdebug`)."""
