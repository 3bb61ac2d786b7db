"""Live trade streams of exchanges over WebSocket: Binance, Coinbase, Kraken, Finnhub.

:mod:`.stream` holds what every venue shares (connection, reconnects, silence, gaps, state);
one module per venue speaks its documented public protocol and its REST trades endpoint.
"""
