"""Write a new migration by comparing every schema's tables with a migrated database.

    DATABASE_URL=postgresql://... python tools/new_migration.py "add the thing"

Review the generated file: Alembic does not see triggers, functions or data changes.
"""

from __future__ import annotations

import sys

from alembic import command

from services.notifications.tables import metadata as notifications
from services.referrals.tables import metadata as referrals
from services.registry.tables import metadata as registry
from shared.migrate import alembic_config
from shared.tables import metadata as hub

ALL_METADATA = [hub, registry, referrals, notifications]


def main() -> None:
    message = " ".join(sys.argv[1:]) or "change"
    config = alembic_config()
    config.attributes["target_metadata"] = ALL_METADATA
    command.revision(config, message=message, autogenerate=True)


if __name__ == "__main__":
    main()
