"""Tests that drive the pages in headless Chromium through the real stack."""
