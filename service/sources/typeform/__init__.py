"""Typeform (`type: typeform`): the adapter."""
