"""Preview URLs: `{port}-{capsule_id}.{WRENN_PREVIEW_DOMAIN}` proxied into a port of a capsule's network."""
