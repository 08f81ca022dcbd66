"""Everything behind a sign-in: one module per domain (accounts, audit, broadcasts, ...)
holding its logic and queries, no HTTP. ``api/`` and ``dashboard/`` sit on top."""
