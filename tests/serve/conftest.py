"""The in-process listener harness (tests/listener_harness.py) for these tests."""

from tests.listener_harness import harness  # noqa: F401 (a fixture)
