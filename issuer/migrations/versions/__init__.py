"""Alembic revisions, oldest first: `rNNNN_<slug>.py`, revision id `NNNN` (see ../README)."""
