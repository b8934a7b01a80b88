"""Shared pytest setup: makes `harness` and `mocks` importable from any test directory."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "e2e_order(n): run after tests with a lower n (default 0); stable otherwise")
