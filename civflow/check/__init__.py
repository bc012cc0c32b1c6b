"""Check a loaded pipeline: templates, references, the step catalog, the DAG and its cycles.

`check_pipeline(spec)` gives a `Checked` (the spec, its template engine, its step
graph and any warnings) or raises `PipelineInvalid` with every independent error,
located. `check_file` does the same from a path, including the schema phase.
"""

from civflow.check._check import Checked, check_file, check_pipeline, conclude
from civflow.check.graph import LocatedRef, StepGraph, build_graph

__all__ = [
    "Checked",
    "LocatedRef",
    "StepGraph",
    "build_graph",
    "check_file",
    "check_pipeline",
    "conclude",
]
