"""Self-contained HTML report of a training run directory (``ranker.report.write_report``)."""

from ranker.report.html import write_report
from ranker.report.plots import calibration_bins, expected_calibration_error

__all__ = ["write_report", "calibration_bins", "expected_calibration_error"]
