"""Pipedrive (`type: pipedrive`): the adapter and its API look-up."""
