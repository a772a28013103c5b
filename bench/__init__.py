"""The terminal benchmark: this project against a local PTY (the floor) and terminado (the peer).

Run it with ``make bench``; see bench/README.md for what it measures and how to read it.
"""
