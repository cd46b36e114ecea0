"""Meta Lead Ads (`type: meta_lead_ads`): the adapter and its Graph API look-up."""
