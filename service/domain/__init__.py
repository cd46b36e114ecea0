"""The bottom layer: the command model, the vocabulary, redaction and the interfaces (state store, rate limiter, provider handler, sender adapter)."""
