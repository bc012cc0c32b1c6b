"""Tests that download from a package registry: probed once per session, skipped when unreachable.

A test marked `@pytest.mark.registry` (PyPI, through pip) or `@pytest.mark.registry("npm")`
installs packages for real. Before the first such test runs, its registry is asked once,
with a short timeout, for one small index page: the one pip (`PIP_INDEX_URL`) or npm
(`NPM_CONFIG_REGISTRY`) would use. When that fails the tests skip, and the run sums them
up in one line (tests/conftest.py); under `CI=true` they fail instead, because CI always
reaches the registries, so a broken network there is never mistaken for a pass.
"""

from __future__ import annotations

import os
from functools import cache

import httpx
import pytest

# Every skip for want of a registry carries this, so the run can count them.
UNREACHABLE = "registry: a package registry is unreachable"
# name -> (variables naming the registry, its default, a small page below it)
REGISTRIES = {
    "pypi": (("PIP_INDEX_URL",), "https://pypi.org/simple/", "pip/"),
    "npm": (("NPM_CONFIG_REGISTRY", "npm_config_registry"), "https://registry.npmjs.org/",
            "npm"),
}
PROBE_SECONDS = 5.0


def registry_url(name: str) -> str:
    variables, default, _ = REGISTRIES[name]
    for variable in variables:
        if os.environ.get(variable, "").strip():
            return os.environ[variable].strip()
    return default


@cache
def unreachable(name: str) -> str | None:
    """None when registry `name` answers; else why not, in one line (asked once a session)."""
    base = registry_url(name)
    page = base.rstrip("/") + "/" + REGISTRIES[name][2]
    try:
        response = httpx.get(page, timeout=PROBE_SECONDS, follow_redirects=True)
    except httpx.HTTPError as exc:
        return f"{name} at {base}: {type(exc).__name__}{': ' + str(exc) if str(exc) else ''}"
    if response.status_code >= 400:
        return f"{name} at {base} answered {response.status_code} for {page}"
    return None


def require_registry(item: pytest.Item) -> None:
    """Skip `item` (fail it under CI=true) when the registry its marker names is unreachable."""
    marker = item.get_closest_marker("registry")
    if marker is None:
        return
    name = marker.args[0] if marker.args else "pypi"
    if name not in REGISTRIES:
        raise pytest.UsageError(f"{item.nodeid}: unknown registry {name!r}; "
                                f"known: {', '.join(REGISTRIES)}")
    reason = unreachable(name)
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must reach the package registry: {reason}", pytrace=False)
    pytest.skip(f"{UNREACHABLE} ({reason})")
