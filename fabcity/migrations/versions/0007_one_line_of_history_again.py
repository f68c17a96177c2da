"""one line of history again

Revision ID: 0007
Revises: 0003, 0004, 0005, 0006
Create Date: 2026-11-28 01:28:24.041228
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | tuple[str, ...] | None = ('0003', '0004', '0005', '0006')
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
