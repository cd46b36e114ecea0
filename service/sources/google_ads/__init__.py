"""Google Ads lead forms (`type: google_ads`): the adapter."""
