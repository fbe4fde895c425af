"""The HTTP surface: one Quart-Trio app per serving lifetime, routes as PROTOCOL.md fixes them."""

from __future__ import annotations

import hmac
import inspect
import json
import uuid
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from ._deadletters import is_safe_job_id
from ._params import Params
from ._result import go_json, utf8
from ._run import STOPPED_BY_REQUEST, SYNC_CALLER_DISCONNECTED, SYNC_TIMEOUT_EXCEEDED
from ._timefmt import format_running, go_duration

if TYPE_CHECKING:
    from ._server import Serving

BUILTIN_PREFIXES = (
    "/run",
    "/stop",
    "/result",
    "/health",
    "/events",
    "/dashboard",
    "/livez",
    "/readyz",
)
READINESS_TIMEOUT_S = 5.0

JSON_TYPE = "application/json"
Handler = TypeVar("Handler", bound=Callable[..., Coroutine[Any, Any, Response]])


def json_response(
    document: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = utf8(go_json(document, sort_keys=False) + "\n")
    return Response(body, status, headers, content_type=JSON_TYPE)


def body_response(body: bytes, status: int = 200) -> Response:
    return Response(body + b"\n", status, content_type=JSON_TYPE)


def error_response(status: int, text: str) -> Response:
    return json_response({"error": text}, status)


class _InvalidBody(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise _InvalidBody(name)  # NaN and Infinity are not JSON


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _InvalidBody(text)  # Go's float64 cannot hold it either
    return value


def _replace_lone_surrogates(value: Any) -> Any:
    """`value` with unpaired UTF-16 surrogates replaced by U+FFFD, as Go's encoding/json does.

    A lone surrogate cannot be encoded as UTF-8, so a jobId holding one
    could never be serialized into a result (nor a step into a snapshot).
    """
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_replace_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {
            _replace_lone_surrogates(key): _replace_lone_surrogates(item)
            for key, item in value.items()
        }
    return value


def parse_run_body(raw: bytes | str) -> tuple[str | None, str | None, dict[str, Any]]:
    """``(jobId, callbackUrl, params)`` from a ``/run`` body. Raises `_InvalidBody`."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not raw.strip():
        return None, None, {}
    try:
        document = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _InvalidBody from error
    if not isinstance(document, dict):
        raise _InvalidBody
    if b"\\ud" in raw.lower():  # a \uD800-\uDFFF escape: the only way to spell a surrogate
        document = _replace_lone_surrogates(document)
    job_id = document.get("jobId")
    callback_url = document.get("callbackUrl")
    params = document.get("params")
    if job_id is not None and not isinstance(job_id, str):
        raise _InvalidBody
    if callback_url is not None and not isinstance(callback_url, str):
        raise _InvalidBody
    if params is not None and not isinstance(params, dict):
        raise _InvalidBody
    return job_id or None, callback_url or None, params or {}


class _JobIdConverter(PathConverter):
    """Any jobId a sync job may carry: slashes, newlines and all (``%2F`` in the URL)."""

    regex = r"[\s\S]+"
    part_isolating = False  # werkzeug infers True from a regex without a literal "/"


def build_app(serving: Serving) -> QuartTrio:
    """The Quart-Trio app serving `serving`'s routes (plus the user's custom routes)."""
    server = serving.server
    app = QuartTrio(server.name)
    app.config["MAX_CONTENT_LENGTH"] = server.max_body_size
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.url_map.converters["job_id"] = _JobIdConverter
    expected_token = (server.auth_token or "").encode()

    def authorized(*, allow_query: bool = False) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode("utf-8", "replace"), expected_token
        ):
            return True
        if allow_query:
            query_token = request.args.get("token")
            if query_token is not None:
                return hmac.compare_digest(query_token.encode("utf-8", "replace"), expected_token)
        return False

    def authenticated(*, allow_query: bool = False) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            @wraps(handler)
            async def checked(*args: Any, **kwargs: Any) -> Response:
                if not authorized(allow_query=allow_query):
                    return error_response(401, "unauthorized")
                return await handler(*args, **kwargs)

            return checked  # type: ignore[return-value]

        return decorate

    @app.post("/run/<task>")
    @authenticated()
    async def run_task(task: str) -> Response:
        if serving.draining.is_set():
            return error_response(503, "Server is shutting down")
        slot = serving.jobs.slots.get(task)
        if slot is None:
            return error_response(404, f'task "{task}" not found')
        if request.content_length is not None and request.content_length > server.max_body_size:
            return error_response(413, "request body too large")
        try:
            job_id, callback_url, params = parse_run_body(
                await request.get_data(cache=False, as_text=False)
            )
        except _InvalidBody:
            return error_response(400, "invalid request body")
        if serving.draining.is_set():  # shutdown began while the body was arriving
            return error_response(503, "Server is shutting down")
        if callback_url is not None:
            if not serving.allowlist:
                return error_response(400, "callback URLs not allowed (no allowlist configured)")
            if not serving.allowlist.allows(callback_url):
                return error_response(400, "callback URL not allowed")
            if job_id is not None and not is_safe_job_id(job_id):
                return error_response(400, "invalid jobId")
        if job_id is None:
            job_id = str(uuid.uuid4())
        stored = slot.history.get(job_id)
        if stored is not None:
            return body_response(stored.body)
        current = slot.current
        if current is not None:
            if current.job_id == job_id:
                answer: dict[str, Any] = {
                    "jobId": job_id,
                    "status": "running",
                    "running": format_running(current.running_s),
                }
                if current.run.current_step:
                    answer["currentStep"] = current.run.current_step
                return json_response(answer)
            return json_response(
                {
                    "error": "Task is busy with a different job",
                    "task": task,
                    "currentJob": {
                        "jobId": current.job_id,
                        "running": format_running(current.running_s),
                    },
                },
                409,
            )
        job = serving.jobs.start(slot, job_id, Params(params), callback_url)
        if callback_url is not None:
            return json_response({"jobId": job_id}, 202)
        try:
            with trio.move_on_after(server.sync_timeout) as waiting:
                await job.done.wait()
        except trio.Cancelled:
            job.cancel(SYNC_CALLER_DISCONNECTED)
            raise
        if waiting.cancelled_caught:
            job.cancel(SYNC_TIMEOUT_EXCEEDED)
            limit = go_duration(round(server.sync_timeout * 1e9))
            return error_response(
                504,
                f"Sync mode timeout exceeded ({limit}). Use callbackUrl for long-running tasks.",
            )
        assert job.result is not None
        return body_response(job.result.body)

    @app.post("/stop/<task>")
    @authenticated()
    async def stop_task(task: str) -> Response:
        slot = serving.jobs.slots.get(task)
        if slot is None:
            return error_response(404, f'task "{task}" not found')
        job = slot.current
        if job is None:
            return json_response({"task": task, "message": "No running job"})
        job.cancel(STOPPED_BY_REQUEST)  # idempotent: the first reason given is reported
        return json_response(
            {"task": task, "jobId": job.job_id, "message": "Cancellation requested"}
        )

    @app.get("/result/<job_id:job_id>")
    @authenticated()
    async def get_result(job_id: str) -> Response:
        stored = serving.jobs.results.find(job_id)
        if stored is None:
            return error_response(404, "result not found")
        return body_response(stored.body)

    @app.get("/health")
    @authenticated()
    async def health() -> Response:
        return body_response(serving.snapshot_body())

    @app.get("/events")
    @authenticated(allow_query=True)
    async def events() -> Response:
        if serving.draining.is_set():
            return error_response(503, "server is shutting down")
        response = Response(
            serving.sse_stream(),
            200,
            {
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            },
        )
        response.timeout = None  # Quart's RESPONSE_TIMEOUT would cut the stream
        return response

    @app.get("/livez")
    async def livez() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if serving.draining.is_set():
            return error_response(503, "server is shutting down")
        if server.readiness is not None:
            try:
                with trio.fail_after(READINESS_TIMEOUT_S):
                    check = server.readiness
                    if inspect.iscoroutinefunction(check):
                        await check()
                    else:  # a plain callable may block (a database ping): not on the loop
                        outcome = await trio.to_thread.run_sync(check, abandon_on_cancel=True)
                        if inspect.isawaitable(outcome):
                            await outcome
            except trio.TooSlowError:
                return error_response(503, "readiness check timed out")
            except Exception as error:  # the user's check failing is the answer
                return error_response(503, str(error) or type(error).__name__)
        return json_response({"status": "ok"})

    if server.dashboard:
        from ._dashboard import dashboard_response

        @app.get("/dashboard")
        async def dashboard() -> Response:
            return dashboard_response(request.headers.get("If-None-Match"))

    for path, methods, view in server._custom_routes:
        app.add_url_rule(path, endpoint=f"custom:{path}", view_func=view, methods=list(methods))

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        texts = {
            404: "not found",
            405: "method not allowed",
            413: "request body too large",
            400: "invalid request body",
        }
        return error_response(status, texts.get(status, error.name.lower()))

    @app.errorhandler(Exception)
    async def unexpected_error(error: Exception) -> Response:
        app.logger.error("unhandled error in %s %s", request.method, request.path, exc_info=error)
        return error_response(500, "internal server error")

    return app
