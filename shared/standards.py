"""The identifiers the hub's standards views share (SPEC 11): the URIs of its code systems.

They are URNs, not URLs, so that they stay the same whatever address a deployment has: an
HSDS taxonomy's `uri` and a FHIR `Coding.system` or `Identifier.system` only need to be
stable and unique.
"""

from __future__ import annotations

SERVICE_TYPES_SYSTEM = "urn:relais:service-types"
REFERRAL_ID_SYSTEM = "urn:relais:referral"
CASE_REFERENCE_SYSTEM = "urn:relais:case-reference"
REFERRAL_STATUS_SYSTEM = "urn:relais:referral-status"
