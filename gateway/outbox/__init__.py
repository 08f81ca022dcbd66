"""The outbox and its worker."""
