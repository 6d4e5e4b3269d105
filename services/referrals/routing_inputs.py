"""What a routing decision reads, read through the store once and kept: the case's area
depths, the services of a type with their partner's state and load, owner partners.

The reconciler keeps one per batch of events (read after the batch's projections are
applied, with the loads folded first, then kept in step with the referrals the batch itself
creates and cancels); `POST /routing/preview` and an admin's assignment keep one per request.
A change another transaction commits meanwhile, such as a referral completed through the
API, is seen from the next batch on: loads order the candidates, they never forbid one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any
from uuid import UUID

from services.referrals.resources import now_utc
from services.referrals.routing import RoutingRequest, ServiceOption, StepHistory, request_for
from services.referrals.store import Connection, loads
from services.referrals.store import projections as projection_store


class RoutingInputs:
    """The inputs of `routing.decide` for any number of steps, each read once."""

    def __init__(self, conn: Connection, *, fold_loads: bool = False) -> None:
        self.conn = conn
        self._fold_loads = fold_loads
        self._depths: dict[str, dict[str, int]] = {}
        self._options: dict[str, dict[UUID, ServiceOption]] = {}
        self._partners: dict[UUID, dict[str, Any] | None] = {}
        self._expected: set[str] = set()

    async def request(
        self,
        *,
        case: Mapping[str, Any],
        service_type: str,
        priority: str,
        history: StepHistory | None = None,
    ) -> RoutingRequest:
        """The routing request of a step of `case` (of this type and priority), now."""
        return request_for(
            case=case,
            service_type=service_type,
            priority=priority,
            area_depths=await self.area_depths(case["return_area_code"]),
            history=history or StepHistory(),
            now=now_utc(),
        )

    async def area_depths(self, area_code: str) -> dict[str, int]:
        if area_code not in self._depths:
            self._depths[area_code] = await projection_store.area_depths(
                self.conn, area_code=area_code
            )
        return self._depths[area_code]

    def expect(self, service_types: Iterable[str]) -> None:
        """Types whose services will be asked for: the first read reads them all at once."""
        self._expected.update(service_types)

    async def service_options(self, service_type: str) -> list[ServiceOption]:
        """The services of the type with their loads (the reconciler folds them first)."""
        if service_type not in self._options:
            types = {service_type} | (self._expected - self._options.keys())
            fold = self._fold_loads and not self._options  # the batch's first read folds
            for read, options in (
                await loads.service_options(self.conn, service_types=types, fold=fold)
            ).items():
                self._options[read] = {o.id: o for o in options}
        return list(self._options[service_type].values())

    def count(self, referral: Mapping[str, Any], delta: int) -> None:
        """A referral entered (+1) or left (-1) its service's load since it was read."""
        options = self._options.get(referral["service_type"], {})
        option = options.get(referral["service_id"])
        if option is not None:
            options[option.id] = replace(option, load=option.load + delta)

    async def partner(self, partner_id: UUID) -> dict[str, Any] | None:
        if partner_id not in self._partners:
            self._partners[partner_id] = await projection_store.get_partner(
                self.conn, partner_id=partner_id
            )
        return self._partners[partner_id]
