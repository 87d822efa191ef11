"""Fixtures for the lab's own tests (other test packages import :mod:`lab.fixtures`)."""

from lab.fixtures import lab, lab_pair, stale_labs_removed

__all__ = ["lab", "lab_pair", "stale_labs_removed"]
