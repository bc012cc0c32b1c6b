"""Scaffolding a project: the editor schema built from the catalog, and `civflow init`'s files."""

from __future__ import annotations

from civflow.scaffold.editor import (
    build_editor_schema,
    editor_schema,
    editor_schema_path,
    editor_schema_text,
)

__all__ = ["build_editor_schema", "editor_schema", "editor_schema_path", "editor_schema_text"]
