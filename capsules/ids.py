"""Public identifiers for capsules; the rule itself is the one the host agent shares (protos/rules.py).

Migrations name `capsules.ids.new_sandbox_id` as the id column's default, so it stays importable here.
"""

from protos.rules import SANDBOX_ID_MAX_LENGTH, new_sandbox_id

__all__ = ["SANDBOX_ID_MAX_LENGTH", "new_sandbox_id"]
