"""The web calculator: a Starlette app over ``convscope.cli.execute``.

The JSON API (``/api/...``) answers what the CLI prints with ``--json``; the pages are rendered
on the server (the first answer included, so a shared link opens answered) and kept up to date
in the browser by small scripts that call the same API.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import registry, zoo
from .commands import (
    CALCULATORS,
    DRAWN_LAYERS,
    MAX_UPLOAD_BYTES,
    POOL_ANALYSIS_KEYS,
    WebError,
    command_argv,
    error_line,
    layer_picture,
    model_items,
    network_picture,
    query_keys,
    run_json,
    spec_suffix,
    uploaded_spec,
    worked_explanation,
)

#: The commands whose worked explanation /api/explain/COMMAND renders as MathML.
EXPLAINED = (*CALCULATORS, "compose")

logger = logging.getLogger("convscope.web")
HERE = Path(__file__).parent
#: A multipart body carries the file and a little framing around it.
MULTIPART_SLACK = 16 * 1024
#: Nothing is loaded from elsewhere; inline styles only for the diagrams' own SVG.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}

#: What the calculator page shows when opened without a query: the seed's first question.
SEED_QUERY = [
    ("layer", "conv"),
    ("input", "64x64x10"),
    ("layout", "hwc"),
    ("out_channels", "10"),
    ("kernel", "6"),
    ("stride", "2"),
    ("padding", "1"),
]
#: What a layer's tab opens on.
LAYER_EXAMPLES = {
    "conv": SEED_QUERY[1:],
    "conv-transpose": [
        ("input", "8x7x7"),
        ("out_channels", "4"),
        ("kernel", "3"),
        ("stride", "2"),
        ("padding", "1"),
        ("output_padding", "1"),
    ],
    "pool": [("input", "8x24x24"), ("kind", "max"), ("kernel", "3"), ("stride", "2")],
    "linear": [("input", "512"), ("out_features", "1000")],
}
POOL_QUERY = [("input", "8x16x16"), ("kind", "max"), ("kernel", "2")]
COMPOSE_QUERY = [("layers", "conv k=5"), ("layers", "conv k=5"), ("input", "1x32x32")]
NETWORK_QUERY = [("model", "lenet5")]
#: The pages' query keys that are not the API's: the page's layer and the diagram's options.
PAGE_ONLY_KEYS = ("layer",)


# -- the API ---------------------------------------------------------------------------------------


def json_error(line: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": line}, status_code=status)


async def answer(
    command: str, work: Callable[[], tuple[bytes | str, str]], status: int = 200
) -> Response:
    """Runs the blocking ``work`` in the thread pool: its body and media type, or the JSON
    error of bad input (400), or, for a bug, a logged JSON error (never a traceback)."""
    try:
        body, media_type = await run_in_threadpool(work)
    except WebError as error:
        return json_error(error.line, error.status)
    except Exception:  # a bug: the message says so, the log holds the traceback
        logger.exception("convscope web: %s failed", command)
        return json_error(error_line(command, "internal error (a bug: see the server log)"), 500)
    return Response(body, status_code=status, media_type=media_type)


def _json_work(argv_of: Callable[[], list[str]], hide: str | None = None) -> Callable[[], Any]:
    return lambda: (run_json(argv_of(), hide), "application/json")


def calculator_endpoint(command: str) -> Callable[[Request], Awaitable[Response]]:
    """``/api/conv`` and the other calculators: ``convscope COMMAND ... --json``."""

    async def endpoint(request: Request) -> Response:
        items = request.query_params.multi_items()
        return await answer(command, _json_work(lambda: command_argv((command,), items)))

    return endpoint


def explain_endpoint(command: str) -> Callable[[Request], Awaitable[Response]]:
    """``/api/explain/conv`` and the others: the worked explanation of ``convscope COMMAND ...
    --markdown --explain``, its formulas as MathML."""

    async def endpoint(request: Request) -> Response:
        items = request.query_params.multi_items()

        def work() -> tuple[str, str]:
            sections = worked_explanation(command_argv((command,), items))
            return json.dumps({"sections": sections}), "application/json"

        return await answer(command, work)

    return endpoint


async def api_compose(request: Request) -> Response:
    items = request.query_params.multi_items()
    return await answer("compose", _json_work(lambda: command_argv(("compose",), items)))


async def api_summary(request: Request) -> Response:
    """GET: a zoo model by name; POST: an uploaded spec file (multipart ``spec`` or the body)."""
    items = request.query_params.multi_items()
    if request.method == "GET":
        work = _json_work(lambda: command_argv(("summary",), model_items("summary", items)))
        return await answer("summary", work)
    return await with_upload(
        request, items, lambda argv, hide: _json_work(lambda: argv, hide), "summary"
    )


def draw_layer_endpoint(kind: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        items = request.query_params.multi_items()
        return await answer(f"draw {kind}", lambda: layer_picture(kind, items))

    return endpoint


async def api_draw_summary(request: Request) -> Response:
    items = request.query_params.multi_items()
    if request.method == "GET":
        return await answer(
            "draw summary", lambda: network_picture(model_items("draw summary", items))
        )
    return await with_upload(
        request,
        items,
        lambda query, hide: lambda: network_picture(query, hide),
        "draw summary",
        as_query=True,
    )


async def with_upload(
    request: Request,
    items: Sequence[tuple[str, str]],
    make_work: Callable[[Any, str], Callable[[], Any]],
    command: str,
    as_query: bool = False,
) -> Response:
    """An uploaded spec file, within the size limit, as a private temporary file standing for
    the model: ``make_work`` gets the command line (or, ``as_query``, the query with the file
    as ``model``) and the folder to hide from messages."""
    if any(name == "model" for name, _ in items):
        return json_error(error_line(command, "the uploaded spec file is the model: no 'model'"))
    try:
        data, filename = await read_upload(request, command)
        suffix = spec_suffix(filename, request.headers.get("content-type", ""), data)
    except WebError as error:
        return json_error(error.line, error.status)
    with uploaded_spec(data, suffix, filename) as (path, folder):
        query = [*items, ("model", str(path))]
        if as_query:
            work = make_work(query, folder)
        else:
            work = make_work(command_argv((command,), query), folder)
        return await answer(command, work)


async def read_upload(request: Request, command: str) -> tuple[bytes, str | None]:
    """The spec file's bytes and its file name, read no further than the limit."""
    too_big = WebError(
        error_line(command, f"the upload is over the limit of {MAX_UPLOAD_BYTES:,} bytes"), 413
    )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_UPLOAD_BYTES + MULTIPART_SLACK:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPLOAD_BYTES + MULTIPART_SLACK:
            raise too_big
    content_type = request.headers.get("content-type", "")
    filename: str | None = None
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        data = await _form_file(request, bytes(body), command)
        if isinstance(data, UploadFile):
            upload = data
            filename = upload.filename
            try:
                data = await upload.read(MAX_UPLOAD_BYTES + 1)
            finally:
                await upload.close()  # its spooled temporary file
    else:
        data = bytes(body)
    if len(data) > MAX_UPLOAD_BYTES:
        raise too_big
    if not data.strip():
        raise WebError(error_line(command, "the uploaded spec file is empty"))
    return data, filename


async def _form_file(request: Request, body: bytes, command: str) -> UploadFile | bytes:
    """The form's ``spec`` field, from the body already read (replayed to the form parser)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    except HTTPException as error:  # a malformed multipart body
        raise WebError(
            error_line(command, f"the upload is not a valid form: {error.detail}")
        ) from None
    field = form.get("spec")
    if field is None:
        raise WebError(error_line(command, "send the spec file as the form field 'spec'"))
    return field if isinstance(field, UploadFile) else field.encode()


# -- the pages -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One form field: a query key, with the CLI option's help."""

    key: str
    label: str
    help: str
    choices: tuple[str, ...] = ()
    switch: bool = False
    required: bool = False
    default: str = ""
    many: bool = False


def _field(key: Any) -> Field:
    default = key.default if isinstance(key.default, (str, int)) else ""
    return Field(
        key=key.name,
        label=key.name.replace("_", " "),
        help=key.help,
        choices=key.choices,
        switch=key.switch,
        required=key.required,
        default=str(default),
        many=key.many,
    )


def calculator_fields(layer: str) -> list[Field]:
    """The calculator's form: the input options, then the layer kind's own options from the
    registry (so the form keeps in step with the CLI). Not the pool analysis' options."""
    keys = query_keys(layer)
    kind_keys = {
        o.flag[2:].replace("-", "_") for o in registry.layer_kinds()[layer].options if o.flag
    }
    common = [k for k in keys if k not in kind_keys and k not in ("explain", *POOL_ANALYSIS_KEYS)]
    fields = [_field(keys[k]) for k in common]
    for option in registry.layer_kinds()[layer].options:
        if option.flag is None:
            continue
        key = keys[option.flag[2:].replace("-", "_")]
        fields.append(_field(key))
    return fields


def fields_of(command: Sequence[str], leave_out: Sequence[str] = ()) -> list[Field]:
    keys = query_keys(*command)
    return [_field(k) for name, k in keys.items() if name not in ("explain", *leave_out)]


def diagram_fields(layer: str) -> list[Field]:
    """The diagram's own options (``--pass``, ``--frames`` of ``convscope draw``)."""
    if layer not in DRAWN_LAYERS:
        return []
    keys = query_keys("draw", layer)
    return [_field(keys[k]) for k in ("pass", "frames")]


def _first_answer(argv_of: Callable[[], list[str]]) -> tuple[Any, str | None]:
    """The page's first answer, rendered on the server: the data, or the error line."""
    try:
        return json.loads(run_json(argv_of())), None
    except WebError as error:
        return None, error.line
    except Exception:
        logger.exception("convscope web: a page's first answer failed")
        return None, "convscope: internal error (a bug: see the server log)"


def _first_working(argv_of: Callable[[], list[str]]) -> list[dict[str, Any]]:
    """The page's first worked explanation (MathML formulas); empty where the answer failed,
    whose error the page shows already."""
    try:
        return worked_explanation(argv_of())
    except WebError:
        return []
    except Exception:
        logger.exception("convscope web: a page's first explanation failed")
        return []


def _first_picture(layer: str, state: Sequence[tuple[str, str]]) -> tuple[str, str | None]:
    """The page's first diagram, inlined by the server (so a refused drawing is a message in
    the page, not a failed request): the SVG, or the error line."""
    keys = query_keys("draw", layer)
    try:
        picture, _ = layer_picture(layer, [(k, v) for k, v in state if k in keys])
    except WebError as error:
        return "", error.line
    except Exception:
        logger.exception("convscope web: a page's first diagram failed")
        return "", "convscope: internal error (a bug: see the server log)"
    return picture.decode(), None


def _state(request: Request, default: list[tuple[str, str]]) -> list[tuple[str, str]]:
    items = request.query_params.multi_items()
    return items if items else list(default)


def _values(state: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for name, value in state:
        values.setdefault(name, []).append(value)
    return values


def page_context(
    request: Request, page: str, state: Sequence[tuple[str, str]], **more: Any
) -> dict[str, Any]:
    return {
        "request": request,
        "page": page,
        "values": _values(state),
        "state_json": json.dumps(state),
        **more,
    }


async def calculator_page(request: Request) -> Response:
    state = _state(request, SEED_QUERY)
    if [name for name, _ in state] == ["layer"]:  # a layer's tab: open on its example
        state = [*state, *LAYER_EXAMPLES.get(state[0][1], [])]
    layer = dict(state).get("layer", "conv")
    if layer not in CALCULATORS:
        layer, bad_layer = "conv", layer
    else:
        bad_layer = None
    drawn = layer in DRAWN_LAYERS
    diagram_keys = ("pass", "frames") if drawn else ()
    api_items = [(k, v) for k, v in state if k not in (*PAGE_ONLY_KEYS, *diagram_keys)]
    result, error = await run_in_threadpool(
        _first_answer, lambda: command_argv((layer,), api_items)
    )
    working = await run_in_threadpool(_first_working, lambda: command_argv((layer,), api_items))
    svg, svg_error = await run_in_threadpool(_first_picture, layer, state) if drawn else ("", None)
    if bad_layer is not None:
        error = error_line("serve", f"layer must be {', '.join(CALCULATORS)}, got {bad_layer!r}")
    return templates.TemplateResponse(
        request,
        "calculator.html",
        page_context(
            request,
            "calculator",
            state,
            layer=layer,
            layers=CALCULATORS,
            fields=calculator_fields(layer),
            diagram_fields=diagram_fields(layer),
            drawn=drawn,
            result=result,
            error=error,
            api=f"/api/{layer}",
            explain_api=f"/api/explain/{layer}",
            working=working,
            draw_api=f"/api/draw/{layer}" if drawn else "",
            diagram_keys=list(diagram_keys),
            draw_keys=list(query_keys("draw", layer)) if drawn else [],
            svg=svg,
            svg_error=svg_error,
        ),
    )


async def pool_page(request: Request) -> Response:
    state = [(k, v) for k, v in _state(request, POOL_QUERY) if k != "analyze"]
    diagram_keys = ("pass", "frames")
    api_items = [(k, v) for k, v in state if k not in diagram_keys]
    result, error = await run_in_threadpool(
        _first_answer, lambda: command_argv(("pool",), [*api_items, ("analyze", "1")])
    )
    svg, svg_error = await run_in_threadpool(_first_picture, "pool", state)
    return templates.TemplateResponse(
        request,
        "pool.html",
        page_context(
            request,
            "pool",
            state,
            fields=fields_of(("pool",), ("analyze",)),
            diagram_fields=diagram_fields("pool"),
            result=result,
            error=error,
            api="/api/pool",
            draw_api="/api/draw/pool",
            diagram_keys=list(diagram_keys),
            draw_keys=list(query_keys("draw", "pool")),
            svg=svg,
            svg_error=svg_error,
            analysis_keys=list(POOL_ANALYSIS_KEYS[1:]),
        ),
    )


async def compose_page(request: Request) -> Response:
    state = _state(request, COMPOSE_QUERY)
    result, error = await run_in_threadpool(
        _first_answer, lambda: command_argv(("compose",), state)
    )
    working = await run_in_threadpool(_first_working, lambda: command_argv(("compose",), state))
    return templates.TemplateResponse(
        request,
        "compose.html",
        page_context(
            request,
            "compose",
            state,
            fields=fields_of(("compose",), ("layers",)),
            result=result,
            error=error,
            api="/api/compose",
            explain_api="/api/explain/compose",
            working=working,
        ),
    )


async def network_page(request: Request) -> Response:
    state = _state(request, NETWORK_QUERY)
    result, error = await run_in_threadpool(
        _first_answer, lambda: command_argv(("summary",), model_items("summary", state))
    )
    return templates.TemplateResponse(
        request,
        "network.html",
        page_context(
            request,
            "network",
            state,
            models=list(zoo.MODELS),
            fields=fields_of(("summary",), ("model",)),
            result=result,
            error=error,
            api="/api/summary",
            draw_api="/api/draw/summary",
            upload_limit=MAX_UPLOAD_BYTES,
        ),
    )


# -- the app ---------------------------------------------------------------------------------------


# The filters below lay out an answer on the server; static/common.js lays out the same answer
# the same way in the browser (keep the two in step).


def _thousands(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _shape(value: Any) -> str:
    return "×".join(map(str, value)) if isinstance(value, list) else "—"


def _scalar(value: Any) -> str:
    """One value of an answer as the page shows it."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(_scalar, value))
    return _thousands(value)


COUNT_ROWS = (
    ("forward", "forward"),
    ("backward_input", "backward input"),
    ("backward_weight", "backward weight"),
    ("backward_bias", "backward bias"),
)
COUNT_OPS = ("mults", "adds", "compares", "divides")


def counts_table(result: dict[str, Any]) -> dict[str, Any]:
    """The exact counts as a table: a row per pass, a column per operation any pass has; a
    gradient the layer does not have is a dash."""
    passes = [(key, label, result.get(key)) for key, label in COUNT_ROWS if key in result]
    ops = [op for op in COUNT_OPS if any(isinstance(c, dict) and op in c for _, _, c in passes)]
    rows = []
    for _, label, counts in passes:
        if not isinstance(counts, dict):
            rows.append({"label": label, "cells": ["—"] * len(ops)})
            continue
        worst = " (worst case)" if counts.get("upper_bound") else ""
        rows.append(
            {"label": label + worst, "cells": [_thousands(counts.get(op, 0)) for op in ops]}
        )
    return {"ops": ops, "rows": rows}


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    return columns


def _field_size(field: Any) -> str:
    if not isinstance(field, dict):
        return "—"
    if field.get("global"):
        return "global"
    return _shape(field.get("size")) + (" (at least)" if field.get("unknown") else "")


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(
    thousands=_thousands,
    shape=_shape,
    scalar=_scalar,
    counts_table=counts_table,
    columns=_columns,
    field_size=_field_size,
)


class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _http_error(request: Request, error: Exception) -> Response:
    status = error.status_code if isinstance(error, HTTPException) else 400
    detail = error.detail if isinstance(error, HTTPException) else "bad request"
    return json_error(error_line("serve", f"{request.url.path}: {detail}"), status)


async def _unexpected(request: Request, error: Exception) -> Response:
    logger.error("convscope web: %s failed", request.url.path, exc_info=error)
    return json_error(error_line("serve", "internal error (a bug: see the server log)"), 500)


def create_app() -> Starlette:
    """The web calculator as an ASGI app: the JSON API, the pages and their static files."""
    routes = [
        Route("/", calculator_page),
        Route("/pool", pool_page),
        Route("/compose", compose_page),
        Route("/network", network_page),
        *(Route(f"/api/{name}", calculator_endpoint(name)) for name in CALCULATORS),
        Route("/api/compose", api_compose),
        *(Route(f"/api/explain/{name}", explain_endpoint(name)) for name in EXPLAINED),
        Route("/api/summary", api_summary, methods=["GET", "POST"]),
        *(Route(f"/api/draw/{name}", draw_layer_endpoint(name)) for name in DRAWN_LAYERS),
        Route("/api/draw/summary", api_draw_summary, methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
    )
