"""Transition shim: the names `consumers/` and `service/redis_state.py` still import from here.
The embedded store itself is `service.state.SqlStateStore`; this module goes when the Kafka
path moves onto it."""

from service.domain.state import Delivery, DeliveryGroup
from service.domain.statuses import OPEN_STATUSES
from service.domain.statuses import overall_status as _overall_status
from service.state.event_log import iso as _iso

__all__ = ["OPEN_STATUSES", "Delivery", "DeliveryGroup", "_iso", "_overall_status"]
