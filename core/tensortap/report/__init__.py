"""The HTML report of a run: `tensortap report RUN --out report.html`."""
from .html import build_report

__all__ = ["build_report"]
