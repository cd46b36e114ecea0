"""HubSpot (`type: hubspot`): the adapter and its CRM look-up client."""
