"""Cross-cutting pieces of the API: keys, tokens, the Redis gate, middleware, errors."""
