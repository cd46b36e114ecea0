"""Unbounce (`type: unbounce`): the adapter."""
