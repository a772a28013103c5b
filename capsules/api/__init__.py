"""The public REST API under /v1/ and /api/v1/: capsules, API keys and sign-in, shaped like Wrenn's."""
