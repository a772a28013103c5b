"""Teams, members, API keys, hosts and sandboxes (capsules)."""
