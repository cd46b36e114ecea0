"""Octanist (seed 004): the handler and its simulator."""
