"""The Starlette application: the v2 consumer routes, resources and the admin API."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from civflow.emulator import _blob_routes as blobs
from civflow.emulator._config import EmulatorConfig
from civflow.emulator._engine import Engine
from civflow.emulator._http import (
    BadQuery,
    FaultsAndCounters,
    base_url,
    bearer_ok,
    bool_param,
    int_param,
    problem,
    validation_problem,
)
from civflow.emulator._model import TERMINAL, Workflow
from civflow.emulator._pricing import check_steps, price
from civflow.emulator._resources import resource_info
from civflow.emulator._validate import check_template

# The real service's request timeout caps how long `wait` can hold a request.
MAX_WAIT_SECONDS = 100


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def _json_body(request: Request) -> tuple[Any, JSONResponse | None]:
    raw = await request.body()
    try:
        return json.loads(raw), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, validation_problem({"$": [f"The request body is not valid JSON: {exc}"]})


async def _wait_for(workflow: Workflow, seconds: int) -> None:
    if seconds > 0 and not workflow.done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(workflow.done.wait(), min(seconds, MAX_WAIT_SECONDS))


def _answer(engine: Engine, workflow: Workflow, request: Request) -> JSONResponse:
    """200 with outputs when terminal; 202 with a snapshot without outputs otherwise."""
    terminal = workflow.status in TERMINAL
    body = engine.views.render(workflow, base_url(request), outputs=terminal)
    return JSONResponse(body, 200 if terminal else 202)


# -- workflows ----------------------------------------------------------------------------

async def submit(request: Request) -> Response:
    engine = _engine(request)
    if not bearer_ok(request, engine):
        return problem(401)
    wait = int_param(request, "wait", 0)
    whatif = bool_param(request, "whatif", False)
    body, bad = await _json_body(request)
    if bad is not None:
        return bad
    checked = check_template(body)
    errors = checked.errors or check_steps(checked.steps)
    if not errors and checked.body.get("ephemeral") and wait <= 0 \
            and not checked.body.get("callbacks"):
        errors = {"ephemeral": ["An ephemeral workflow needs wait > 0 or a callback."]}
    if errors:
        return validation_problem(errors)
    external = checked.body.get("externalId")
    if external and external in engine.index.by_external and not whatif:
        existing = engine.index.workflows[engine.index.by_external[external]]
        engine.counters.external_id_hits += 1
        await _wait_for(existing, wait)
        return _answer(engine, existing, request)
    cost = price(checked.steps, checked.body.get("tips"))
    short = engine.balance is not None and cost["total"] > engine.balance
    if whatif:
        # Whatif records nothing, not even the externalId: a later real submit with the
        # same key creates the workflow (the spec's "including from a prior whatif" is
        # unconfirmed, and creating nothing is the conservative reading).
        preview = engine.preview(checked.body, checked.steps, cost, base_url(request))
        preview["transactions"]["insufficientBuzz"] = short
        return JSONResponse(preview, 200)
    if short:
        # The real service declares this 403 body as a bare JSON string.
        return JSONResponse("Insufficient buzz to run this workflow.", 403)
    workflow = engine.create(checked.body, checked.steps, cost, base_url(request),
                             charge=cost["total"])
    await _wait_for(workflow, wait)
    return _answer(engine, workflow, request)


def _find(request: Request) -> Workflow | None:
    return _engine(request).index.workflows.get(request.path_params["workflow_id"])


def _not_found(what: str) -> JSONResponse:
    return problem(404, f"{what} was not found.")


def _authorized_workflow(request: Request) -> tuple[Engine, Workflow] | Response:
    """The engine and the workflow in the path, or the 401/404 answer to give instead."""
    engine = _engine(request)
    if not bearer_ok(request, engine):
        return problem(401)
    workflow = _find(request)
    if workflow is None:
        return _not_found("The workflow")
    return engine, workflow


async def get_workflow(request: Request) -> Response:
    engine = _engine(request)
    if not bearer_ok(request, engine):
        return problem(401)
    wait = int_param(request, "wait", 0)
    workflow = _find(request)
    if workflow is None:
        return _not_found("The workflow")
    await _wait_for(workflow, wait)
    if workflow.id not in engine.index.workflows:  # deleted while we waited
        return _not_found("The workflow")
    return _answer(engine, workflow, request)


def _date_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise BadQuery(name, raw) from None


async def list_workflows(request: Request) -> Response:
    engine = _engine(request)
    if not bearer_ok(request, engine):
        return problem(401)
    take = int_param(request, "take", 100)
    if take < 1:
        raise BadQuery("take", str(take))
    page, cursor = engine.index.query(
        tags=request.query_params.getlist("tags"), take=min(take, 1000),
        cursor=request.query_params.get("cursor"),
        ascending=bool_param(request, "ascending", False),
        exclude_failed=bool_param(request, "excludeFailed", False),
        text=request.query_params.get("query"),
        from_ts=_date_param(request, "fromDate"), to_ts=_date_param(request, "toDate"))
    base = base_url(request)
    items = [engine.views.render(w, base, outputs=w.status in TERMINAL) for w in page]
    return JSONResponse({"next": cursor, "items": items})


def _check_tags(tags: object) -> list[str] | None:
    if not isinstance(tags, list) or not all(isinstance(t, str) and len(t) <= 200 for t in tags):
        return None
    if len(tags) > 10 or len(set(tags)) != len(tags):
        return None
    return tags


async def update_workflow(request: Request) -> Response:
    found = _authorized_workflow(request)
    if isinstance(found, Response):
        return found
    engine, workflow = found
    body, bad = await _json_body(request)
    if bad is not None:
        return bad
    if not isinstance(body, dict):
        return validation_problem({"$": ["The body must be an UpdateWorkflowRequest object."]})
    errors: dict[str, list[str]] = {}
    if body.get("status") not in (None, "canceled"):
        errors["status"] = [f"The value '{body['status']}' is not valid for status."]
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        errors["metadata"] = ["The metadata must be an object."]
    tags = body.get("tags")
    if tags is not None and _check_tags(tags) is None:
        errors["tags"] = ["At most 10 unique tags of at most 200 characters."]
    if errors:
        return validation_problem(errors)
    if body.get("metadata") is not None:
        workflow.body["metadata"] = body["metadata"]
    if tags is not None:
        engine.retag(workflow, tags)
    if body.get("status") == "canceled":
        engine.clock.cancel(workflow)
    return Response(status_code=204)


async def patch_workflow(request: Request) -> Response:
    """JSON Patch, limited to what the API documents: cancel, metadata, tags."""
    found = _authorized_workflow(request)
    if isinstance(found, Response):
        return found
    engine, workflow = found
    ops, bad = await _json_body(request)
    if bad is not None:
        return bad
    if not isinstance(ops, list):
        return validation_problem({"$": ["The body must be a JSON Patch document (an array)."]})
    for index, op in enumerate(ops):
        kind = op.get("op") if isinstance(op, dict) else None
        path = op.get("path") if isinstance(op, dict) else None
        value = op.get("value") if isinstance(op, dict) else None
        if kind in ("add", "replace") and path == "/status" and value == "canceled":
            engine.clock.cancel(workflow)
        elif kind in ("add", "replace") and path == "/metadata" and isinstance(value, dict):
            workflow.body["metadata"] = value
        elif kind in ("add", "replace") and isinstance(path, str) \
                and path.startswith("/metadata/"):
            metadata = dict(workflow.body.get("metadata") or {})
            metadata[path.removeprefix("/metadata/")] = value
            workflow.body["metadata"] = metadata
        elif kind == "add" and path == "/tags/-" and isinstance(value, str):
            new = [*(workflow.body.get("tags") or []), value]
            if _check_tags(new) is None:
                return validation_problem({f"[{index}]": ["Too many or duplicate tags."]})
            engine.retag(workflow, new)
        elif kind in ("add", "replace") and path == "/tags" and (
                checked := _check_tags(value)) is not None:
            engine.retag(workflow, checked)
        else:
            return validation_problem({f"[{index}]": ["This patch operation is not supported."]})
    return Response(status_code=204)


async def delete_workflow(request: Request) -> Response:
    found = _authorized_workflow(request)
    if isinstance(found, Response):
        return found
    engine, workflow = found
    engine.delete(workflow)
    return Response(status_code=204)


async def add_tag(request: Request) -> Response:
    found = _authorized_workflow(request)
    if isinstance(found, Response):
        return found
    engine, workflow = found
    tag, bad = await _json_body(request)
    if bad is not None:
        return bad
    current = list(workflow.body.get("tags") or [])
    new = current if tag in current else [*current, tag]
    if not isinstance(tag, str) or _check_tags(new) is None:
        return validation_problem({"tag": ["A tag is a string of at most 200 characters; "
                                           "at most 10 per workflow."]})
    engine.retag(workflow, new)
    return Response(status_code=204)


async def remove_tags(request: Request) -> Response:
    found = _authorized_workflow(request)
    if isinstance(found, Response):
        return found
    engine, workflow = found
    tag = request.path_params.get("tag")
    kept = [] if tag is None else [t for t in workflow.body.get("tags") or [] if t != tag]
    engine.retag(workflow, kept)
    return Response(status_code=204)


async def get_step(request: Request) -> Response:
    engine = _engine(request)
    if not bearer_ok(request, engine):
        return problem(401)
    workflow = _find(request)
    step = workflow.step(request.path_params["step_name"]) if workflow else None
    if workflow is None or step is None:
        return _not_found("The workflow step")
    body = engine.views.render_step(workflow, step, base_url(request), outputs=True)
    return JSONResponse(body)


async def update_step(request: Request) -> Response:
    engine = _engine(request)
    if not bearer_ok(request, engine):
        return problem(401)
    workflow = _find(request)
    step = workflow.step(request.path_params["step_name"]) if workflow else None
    if workflow is None or step is None:
        return _not_found("The workflow step")
    body, bad = await _json_body(request)
    if bad is not None:
        return bad
    if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
        return validation_problem({"metadata": ["The metadata must be an object."]})
    step.metadata = body.get("metadata") or {}
    return Response(status_code=204)


def _route_table() -> list[Route]:
    prefix = "/v2/consumer"
    wf = f"{prefix}/workflows/{{workflow_id}}"
    return [
        Route(f"{prefix}/workflows", submit, methods=["POST"]),
        Route(f"{prefix}/workflows", list_workflows, methods=["GET"]),
        Route(wf, get_workflow, methods=["GET"]),
        Route(wf, update_workflow, methods=["PUT"]),
        Route(wf, patch_workflow, methods=["PATCH"]),
        Route(wf, delete_workflow, methods=["DELETE"]),
        Route(f"{wf}/tags", add_tag, methods=["POST"]),
        Route(f"{wf}/tags", remove_tags, methods=["DELETE"]),
        Route(f"{wf}/tags/{{tag}}", remove_tags, methods=["DELETE"]),
        Route(f"{wf}/steps/{{step_name}}", get_step, methods=["GET"]),
        Route(f"{wf}/steps/{{step_name}}", update_step, methods=["PUT"]),
        *blobs.routes(prefix),
        Route("/v2/resources/{air:path}", get_resource, methods=["GET"]),
        Route("/_emulator/counters", admin_counters, methods=["GET"]),
        Route("/_emulator/faults", admin_faults, methods=["GET", "PUT"]),
        Route("/_emulator/reset", admin_reset, methods=["POST"]),
        Route("/_emulator/blobs/{blob_id}", admin_forget_blob, methods=["DELETE"]),
        Route("/_emulator/expire-urls", admin_expire_urls, methods=["POST"]),
        Route("/_emulator/resources/{air}", admin_forget_air, methods=["DELETE"]),
    ]


# -- resources and admin --------------------------------------------------------------------

async def get_resource(request: Request) -> Response:
    engine = _engine(request)
    info = resource_info(request.path_params["air"], missing=frozenset(engine.missing_airs),
                         known_only=engine.config.known_airs_only)
    if info is None:
        return problem(404, f"The resource '{request.path_params['air']}' is not known.")
    return JSONResponse(info)


async def admin_counters(request: Request) -> Response:
    engine = _engine(request)
    return JSONResponse(engine.counters.as_dict(engine))


async def admin_faults(request: Request) -> Response:
    engine = _engine(request)
    if request.method == "PUT":
        body, bad = await _json_body(request)
        if bad is not None:
            return bad
        if not isinstance(body, dict):
            return validation_problem({"$": ["The body must be an object of fault settings."]})
        problems = engine.set_faults(body)
        if problems:
            return validation_problem({"faults": problems})
    return JSONResponse(engine.config.faults())


async def admin_reset(request: Request) -> Response:
    _engine(request).reset()
    return Response(status_code=204)


async def admin_forget_blob(request: Request) -> Response:
    found = _engine(request).blobs.forget(request.path_params["blob_id"])
    return Response(status_code=204) if found else _not_found("The blob")


async def admin_forget_air(request: Request) -> Response:
    """From now on the AIR does not exist here (a model taken down, a typo to test)."""
    _engine(request).missing_airs.add(request.path_params["air"])
    return Response(status_code=204)


async def admin_expire_urls(request: Request) -> Response:
    _engine(request).blobs.rotate_secret()
    return Response(status_code=204)


async def _bad_query(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadQuery)
    return validation_problem(exc.errors)


def create_app(config: EmulatorConfig) -> Starlette:
    """The emulator as an ASGI app; serve it with uvicorn (see `start_emulator`)."""
    engine = Engine(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            engine.close()

    routes = _route_table()
    app = Starlette(
        routes=routes,
        middleware=[Middleware(FaultsAndCounters, engine=engine, routes=lambda: routes)],
        exception_handlers={BadQuery: _bad_query},
        lifespan=lifespan,
    )
    app.state.engine = engine
    return app

