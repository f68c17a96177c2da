"""open standards: designs from Open Know-How

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-28 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('designs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('version', sa.String(length=100), nullable=True),
    sa.Column('licence', sa.String(length=200), nullable=True),
    sa.Column('licensor', sa.String(length=300), nullable=True),
    sa.Column('is_open', sa.Boolean(), nullable=False),
    sa.Column('oshwa_uid', sa.String(length=32), nullable=True),
    sa.Column('mass_kg', sa.Float(), nullable=True),
    sa.Column('parts', sa.JSON(), nullable=False),
    sa.Column('circularity', sa.JSON(), nullable=True),
    sa.Column('standard', sa.String(length=16), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_designs')),
    sa.UniqueConstraint('url', name=op.f('uq_designs_url'))
    )


def downgrade() -> None:
    op.drop_table('designs')
