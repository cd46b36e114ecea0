"""Kafka workers (distributed mode): source topics -> commands, the command topic -> `DeliveryCore`, and their wiring."""
