"""The base of every configuration section: strict, immutable, and reporting every bad field."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys are errors (a typo must not be silently ignored); a loaded config never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
