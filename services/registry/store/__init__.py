"""The registry's queries: the only code of the service that holds SQL or touches the driver.

One module per resource; every function is keyword-only after the session it takes. The
caller owns the transaction.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession as Session

__all__ = ["SOURCE", "Session"]

SOURCE = "/registry"
