"""Fixtures for emulator tests: a running emulator and a client that checks every answer.

Every JSON body the emulator returns is validated against the official OpenAPI
document for the operation and status it answers; without the document the schema
assertions are skipped but the behavioural ones still run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from civflow.emulator import RunningEmulator
from tests.emulator_fixture import emulator, served_emulator  # noqa: F401
from tests.openapi_support import OPENAPI_PATH, OpenApi, require_openapi

PREFIX = "/v2/consumer"


UNCHECKED: list[str] = []  # emulator tests whose answers went unchecked (no document)


def openapi_or_none() -> OpenApi | None:
    """The document's validator; without it (never under CI=true) answers go unchecked,
    and the run's summary says how many tests that was."""
    if OPENAPI_PATH.is_file() or os.environ.get("CI", "").lower() == "true":
        return require_openapi()
    UNCHECKED.append(os.environ.get("PYTEST_CURRENT_TEST", "?"))
    return None


@dataclass
class Api:
    """httpx against the emulator; `call` checks the response against the documented schema."""

    client: httpx.Client
    spec: OpenApi | None
    checked: list[str] = field(default_factory=list)

    def call(self, method: str, template: str, *, expect: int | None = None,
             path: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        url = template
        for name, value in (path or {}).items():
            url = url.replace("{" + name + "}", quote(value, safe=""))
        response = self.client.request(method, url, **kwargs)
        if expect is not None:
            assert response.status_code == expect, response.text
        self.validate(method, template, response)
        return response

    def validate(self, method: str, template: str, response: httpx.Response) -> None:
        if self.spec is None:
            return
        declared = self.spec.declared_statuses(template, method)
        assert str(response.status_code) in declared, (
            f"{method} {template} answered {response.status_code}, declared: {declared}")
        if response.headers.get("content-type", "").split(";")[0].endswith("json"):
            errors = self.spec.response_errors(template, method, response.status_code,
                                               response.json())
            # An input field still waiting on (or canceled with) its source shows the
            # `{"$ref", "path"}` object it was submitted with; the document types only
            # resolved values, so that one mismatch is expected and nothing else is.
            errors = [e for e in errors if ": {'$ref': " not in e]
            assert errors == [], f"{method} {template} {response.status_code}: {errors}"
            self.checked.append(f"{method} {template} {response.status_code}")

    def submit(self, body: dict[str, Any], *, wait: int = 30, expect: int | None = 200,
               **params: Any) -> dict[str, Any]:
        response = self.call("POST", f"{PREFIX}/workflows", expect=expect, json=body,
                             params={"wait": wait, **params})
        data: dict[str, Any] = response.json()
        return data

    def get(self, workflow_id: str, *, wait: int = 0) -> httpx.Response:
        return self.call("GET", f"{PREFIX}/workflows/{{workflowId}}",
                         path={"workflowId": workflow_id}, params={"wait": wait})


@pytest.fixture
def api(emulator: RunningEmulator) -> Iterator[Api]:  # noqa: F811
    with httpx.Client(base_url=emulator.url, headers={"Authorization": "Bearer test-key"},
                      timeout=60) as client:
        yield Api(client, openapi_or_none())


SDXL = "urn:air:sdxl:checkpoint:civitai:101055@128078"


def image_step(name: str = "hero", *, prompt: str = "a red fox in fresh snow", seed: int = 42,
               size: int = 256, quantity: int = 1, fmt: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"engine": "sdcpp", "ecosystem": "sdxl", "operation": "createImage",
                            "model": SDXL, "prompt": prompt, "width": size, "height": size,
                            "seed": seed, "quantity": quantity, "steps": 20}
    if fmt is not None:
        data["outputFormat"] = fmt
    return {"$type": "imageGen", "name": name, "input": data}


def echo_step(message: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"$type": "echo", "input": {"message": message}, **extra}
