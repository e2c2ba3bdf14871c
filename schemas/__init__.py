"""Pydantic models of everything that crosses a boundary, and the exported JSON Schema."""

from depthcard.schemas.report import SCHEMA_VERSION, AuditReport

__all__ = ["SCHEMA_VERSION", "AuditReport"]
