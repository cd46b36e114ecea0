"""Simulators of the APIs the senders' adapters call (HubSpot CRM, Meta Graph, Pipedrive),
served over real HTTP on loopback for tests and the sandbox. Each follows the documented
contract: paths, auth, body shapes, error bodies and status codes, and records every call
at `GET /_sim/calls`; `POST /_sim/faults` makes the next calls fail (see
handlers/simulators/common.py)."""
