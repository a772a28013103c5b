"""Public identifiers for capsules: `cl-` followed by 20 hex characters."""

import secrets

SANDBOX_ID_PREFIX = "cl-"
SANDBOX_ID_MAX_LENGTH = 32


def new_sandbox_id() -> str:
    return SANDBOX_ID_PREFIX + secrets.token_hex(10)
