"""LeadSquared Async (seeds 000, 002): the handler and its simulator."""
