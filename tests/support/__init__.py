"""Helpers that start real project processes for tests."""
