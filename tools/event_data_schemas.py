"""Writes `shared/data/event_data.schema.json`: the JSON Schemas of the resources the
registry and the referrals service carry in their events' `data`, taken from their own
response models. The notifications service documents its webhooks with them without
importing another service; `tests/test_openapi.py` fails when the file and the models differ.

    .venv/bin/python tools/event_data_schemas.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "shared" / "data" / "event_data.schema.json"


def build() -> dict[str, Any]:
    """Each resource schema by name, with the schemas they refer to, as OpenAPI components."""
    from services.referrals.schemas import PathwayCompleted, Referral
    from services.registry.schemas import PartnerRead
    from services.registry.schemas_cases import CaseErased, CaseRead, ServiceRead

    models = (PartnerRead, ServiceRead, CaseRead, CaseErased, Referral, PathwayCompleted)
    _, document = models_json_schema(
        [(model, "serialization") for model in models],
        ref_template="#/components/schemas/{model}",
    )
    return dict(sorted(document["$defs"].items()))


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def main() -> None:
    sys.path.insert(0, str(ROOT))
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
