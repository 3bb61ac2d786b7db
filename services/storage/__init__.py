"""Time-series storage: active path, aggregate lag, bar maintenance and tick retention."""
