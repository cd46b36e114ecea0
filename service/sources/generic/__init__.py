"""The generic sender (`type: generic`, Standard Webhooks): the adapter."""
