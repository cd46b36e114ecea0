"""Calendly (`type: calendly`): the adapter."""
