"""Tests of the capsules app."""

MEMBER_PASSWORD = "correct horse battery"
