"""LeadSquared sync (Lead.Update, seed 001): the handler and its simulator."""
