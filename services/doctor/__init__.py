"""``pricecast doctor``: check every dependency and known failure mode, say what is wrong
and how to fix it (see docs/troubleshooting.md)."""

from services.doctor.cli import main

__all__ = ["main"]
