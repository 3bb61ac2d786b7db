"""Live streams: WebSocket ``/api/v1/stream`` and SSE ``/api/v1/stream/sse`` (docs/streams.md)."""
