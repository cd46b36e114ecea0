"""PollyBot (seed 003): the handler and its simulator."""
