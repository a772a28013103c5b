"""Tests of the people's pages: the home page, its forms, signing in and out, and playback."""
