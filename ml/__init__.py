"""Forecasting core: models behind one interface, selection, serving, evaluation, registry.

``ml`` never imports ``services``: the services pass plain arrays, settings values and
SQLAlchemy connections in.
"""
