"""Pricecast services: shared code (``services.common``) and the three services."""

__version__ = "0.1.0"
