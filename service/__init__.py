"""leadrelay: webhooks and Kafka records in, lead updates out; its layers are the subpackages (docs/architecture.md)."""
