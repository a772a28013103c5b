"""Share links: a signed, expiring, revocable link that lets anyone watch one terminal session."""
