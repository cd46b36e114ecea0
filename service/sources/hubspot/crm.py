"""HubSpot CRM look-ups for one webhook request, in batches: one
`POST /crm/v3/objects/contacts/batch/read` for all contacts the request names, and for
deals `POST /crm/v4/associations/deal/contact/batch/read` (each deal's first associated
contact) plus `POST /crm/v3/objects/deals/batch/read` for new deals' properties. A batch of
100 events costs at most three calls; answers are cached per object, so a redelivery or a
contact named by many events costs none. All calls of one request share one deadline.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from service.sources.fetch import FetchClient, FetchError, Verdict

BATCH_LIMIT = 100  # HubSpot's batch input limit
DEAL_READ_PROPERTIES = ["dealstage", "amount", "dealname"]


class CrmUnavailable(Exception):
    """A look-up failed transiently or permanently (bad token): the sender must redeliver."""


class HubSpotCrm:
    def __init__(self, api: FetchClient) -> None:
        self.api = api

    def lookups(
        self,
        contact_ids: Iterable[str],
        deal_ids: Iterable[str],
        created_deals: Iterable[str],
        properties: list[str],
    ) -> dict[str, dict[str, Any]]:
        """{"contacts": id -> properties, "deals": id -> properties, "deal_contacts": deal -> contact}."""
        deadline = self.api.deadline()  # HubSpot stops waiting for the webhook after 5 s
        deal_contacts = self.deal_contacts(sorted(set(deal_ids)), deadline)
        deals = self.batch_read("deals", sorted(set(created_deals)), DEAL_READ_PROPERTIES, deadline)
        wanted = sorted(set(contact_ids) | set(deal_contacts.values()))
        contacts = self.batch_read("contacts", wanted, properties, deadline)
        return {"contacts": contacts, "deals": deals, "deal_contacts": deal_contacts}

    def batch_read(
        self, object_type: str, ids: list[str], properties: list[str], deadline: float
    ) -> dict[str, dict[str, Any]]:
        """id -> properties, from the cache or `POST /crm/v3/objects/<type>/batch/read`."""
        found, missing = self._split_cached(object_type, ids)
        for start in range(0, len(missing), BATCH_LIMIT):
            chunk = missing[start : start + BATCH_LIMIT]
            body = self._call(
                f"/crm/v3/objects/{object_type}/batch/read",
                {"properties": properties, "inputs": [{"id": i} for i in chunk]},
                deadline,
            )
            for result in _results(body):
                props = result.get("properties") if isinstance(result.get("properties"), dict) else {}
                found[str(result.get("id"))] = props
                self.api.cache.put(f"{object_type}:{result.get('id')}", props)
        return found

    def _split_cached(self, kind: str, ids: list[str]) -> tuple[dict[str, Any], list[str]]:
        """(what the cache already holds by id, the ids still to fetch)."""
        found: dict[str, Any] = {}
        missing = []
        for object_id in ids:
            cached = self.api.cache.get(f"{kind}:{object_id}")
            if cached is not None:
                found[object_id] = cached
            else:
                missing.append(object_id)
        return found, missing

    def deal_contacts(self, deal_ids: list[str], deadline: float) -> dict[str, str]:
        """deal id -> its first associated contact id (`POST /crm/v4/associations/deal/contact/batch/read`)."""
        out, missing = self._split_cached("deal_contact", deal_ids)
        for start in range(0, len(missing), BATCH_LIMIT):
            chunk = missing[start : start + BATCH_LIMIT]
            body = self._call(
                "/crm/v4/associations/deal/contact/batch/read",
                {"inputs": [{"id": i} for i in chunk]},
                deadline,
            )
            for result in _results(body):
                to = result.get("to") if isinstance(result.get("to"), list) else []
                targets = sorted(
                    str(t["toObjectId"]) for t in to if isinstance(t, dict) and t.get("toObjectId")
                )
                source = result.get("from")
                if targets and isinstance(source, dict):
                    deal_id = str(source.get("id"))
                    out[deal_id] = targets[0]
                    self.api.cache.put(f"deal_contact:{deal_id}", targets[0])
        return out

    def _call(self, path: str, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        try:
            answer = self.api.request("POST", path, json_body=body, deadline=deadline)
        except FetchError as exc:
            if exc.verdict is Verdict.NOT_FOUND:
                return {}
            raise CrmUnavailable(exc.reason) from None
        return answer if isinstance(answer, dict) else {}


def _results(body: dict[str, Any]) -> list[dict[str, Any]]:
    results = body.get("results")
    return [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []
