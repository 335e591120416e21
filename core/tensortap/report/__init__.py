"""The HTML report of a run: `tensortap report RUN --out report.html`."""
from .html import ReportError, build_report

__all__ = ["ReportError", "build_report"]
