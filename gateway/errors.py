"""Errors every layer may raise."""

from __future__ import annotations


class StartupError(Exception):
    """The gateway refuses to start; the message says why and what to do."""
