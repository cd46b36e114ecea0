"""The one shape every source adapter has.

An adapter is a small module: `verify` (signature or credentials), a marshmallow schema,
`event_id`, and `normalise(payload) -> [LeadUpdateCommand]` driven by a table from event
type to function. The same adapter serves `POST /webhooks/<source>` and a Kafka source
topic bound to that format, so it sees an `InboundRequest`, never a Flask request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from marshmallow import ValidationError

from service.domain.command import LeadUpdateCommand
from service.domain.validators import flatten_messages
from service.sources.json_body import JsonRefused, NotUtf8, decode_json


class AdapterError(Exception):
    """Base of the errors an adapter raises; each maps to one HTTP answer."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "BAD_REQUEST"

    def __init__(
        self, message: str, details: Mapping[str, Any] | None = None, *, log_detail: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message  # answered to the sender: words, never internals
        self.details = dict(details or {})
        self.log_detail = log_detail  # for the log only (addresses, exception text)


class AuthenticationFailed(AdapterError):
    status = 401
    code = "UNAUTHORIZED"


class BodyUnreadable(AdapterError):
    """The body could not be read off the connection (malformed chunked framing, a client
    that stopped sending): the sender's fault, never worth a retry of the same bytes."""

    status = 400
    code = "BAD_REQUEST"


class UnsupportedMediaType(AdapterError):
    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class PayloadInvalid(AdapterError):
    status = 400
    code = "VALIDATION_ERROR"

    @classmethod
    def from_marshmallow(cls, error: ValidationError) -> PayloadInvalid:
        messages = error.normalized_messages()
        return cls("the payload is not valid", flatten_messages(messages))


class UpstreamUnavailable(AdapterError):
    """A fetch the adapter needs (CRM API, Graph API) failed transiently: the sender retries."""

    status = 503
    code = "UPSTREAM_UNAVAILABLE"


@dataclass(frozen=True)
class InboundRequest:
    """What an adapter may look at: transport-neutral (HTTP request or Kafka record)."""

    source: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-cased names
    method: str = "POST"
    url: str = ""  # the public URL the sender called (for signatures over the URL)
    query: Mapping[str, str] = field(default_factory=dict)
    path_params: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    received_at: float = 0.0  # unix seconds
    transport: str = "http"  # "http" | "kafka"

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self, *, big_ints_as_str: bool = False) -> Any:
        """The body as JSON (depth-limited, UTF-8). `big_ints_as_str`: integers stay their
        exact decimal text, so an id beyond 2^53 is never rounded through a float."""
        media_type = self.content_type.split(";")[0].strip().lower()
        if media_type not in ("application/json", "text/json", "") and not media_type.endswith("+json"):
            raise UnsupportedMediaType(f"expected application/json, got {self.content_type!r}")
        try:
            return decode_json(self.body, big_ints_as_str=big_ints_as_str)
        except JsonRefused as exc:
            raise PayloadInvalid(str(exc), {"_schema": [str(exc)]}) from None
        except NotUtf8 as exc:
            raise UnsupportedMediaType(str(exc)) from None
        except ValueError as exc:
            raise UnsupportedMediaType(f"the body is not valid JSON: {str(exc)[:200]}") from None


@dataclass
class Normalised:
    """An adapter's answer: commands to queue, and events deliberately not handled."""

    commands: list[LeadUpdateCommand] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # event types acknowledged but unsupported
    skipped_mappings: int = 0  # configured mappings naming a field the payload did not have
    # canonical field -> the sender's field it was read from, where that was inferred (a
    # normalised name, a value's shape) rather than mapped by name: said in the answer.
    matched_fields: dict[str, str] = field(default_factory=dict)


class SourceAdapter:
    """Subclass per sender. `settings` is the sender's validated config section."""

    name: ClassVar[str]
    # Extra keys this adapter accepts in its config section, as marshmallow fields.
    settings_fields: ClassVar[dict[str, Any]] = {}
    # Sources that the Kafka consumers can read in this format (False: HTTP only).
    kafka_capable: ClassVar[bool] = True
    # Whether a repeat of the lead's latest accepted change is a double submit (forms
    # without a stable id per submission) or a real event (a CRM change with its own id).
    # The source's `double_submit_guard` setting overrides it.
    double_submit_guard: ClassVar[bool] = True
    # Whether `verify` reads `InboundRequest.url` (a signature over the URL). Others get it
    # empty: building it costs about 40 us of every webhook.
    signs_url: ClassVar[bool] = False

    def __init__(self, source: str, settings: Mapping[str, Any]) -> None:
        self.source = source
        self.settings = settings

    def verify(self, request: InboundRequest) -> None:
        """Raise AuthenticationFailed unless the request is authentic."""
        raise NotImplementedError

    def parse(self, request: InboundRequest) -> Any:
        """Decode and validate the body with the adapter's schema; raise PayloadInvalid."""
        raise NotImplementedError

    def event_id(self, payload: Any, request: InboundRequest) -> str | None:
        return None

    def normalise(self, payload: Any, request: InboundRequest) -> Normalised:
        raise NotImplementedError

    @property
    def unverified(self) -> bool:
        """True when the operator declared this source takes requests without verification."""
        return False

    def answer(self, status: int, body: dict[str, Any]) -> tuple[int, bytes, str] | None:
        """(status, body, content type) for senders that need their own answer format (a SOAP
        acknowledgement, a configured success body); None: leadrelay's JSON answer."""
        return None

    def handle_get(self, request: InboundRequest) -> tuple[int, str] | None:
        """A GET on the webhook route (Meta's verification handshake); None: 405."""
        return None
