"""The web layer: the Flask app, webhook routes, admin API, health, OpenAPI and the operator console."""
