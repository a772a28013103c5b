"""Wrenn control plane: Django project package.

Importing this package pins the name ``pty`` to this repository's Django app.
"""

import importlib.util
import os
import sys

# The Django app ``pty/`` shares its name with the standard-library module.
# ``python manage.py`` and pytest put the repository root first on sys.path, so
# ``import pty`` finds the app. The ``daphne`` console command does not: it
# imports Twisted, which imports the standard-library ``pty``, before it adds
# the root to sys.path, and ``pty.consumers`` then fails with "'pty' is not a
# package". Every entry point imports this package before any app, so this is
# the one place that makes ``pty`` mean the app. Modules that already hold the
# standard-library module (Twisted) keep their own reference to it.
_APP_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pty")


def _pin_pty_app() -> None:
    loaded = sys.modules.get("pty")
    if loaded is not None and list(getattr(loaded, "__path__", [])) == [_APP_DIR]:
        return
    spec = importlib.util.spec_from_file_location(
        "pty", os.path.join(_APP_DIR, "__init__.py"), submodule_search_locations=[_APP_DIR]
    )
    if spec is None or spec.loader is None:  # pragma: no cover - the app ships with the repo
        raise ImportError(f"cannot load the pty app from {_APP_DIR}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pty"] = module
    spec.loader.exec_module(module)


_pin_pty_app()
