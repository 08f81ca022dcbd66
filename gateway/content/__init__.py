"""Flow definitions and catalogs, loaded as data."""
