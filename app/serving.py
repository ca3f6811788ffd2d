"""Run the app under uvicorn with a graceful stop: what ``manage.py serve`` does after its checks.

On SIGTERM (or SIGINT) the server stops accepting connections at once, lets the requests it has accepted
finish for up to ``SHUTDOWN_GRACE_SECONDS``, answers any still running after that with a 503 problem,
runs the app's shutdown (closing the database pool) and exits with status 0. The same holds with
several workers.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Any

import msgspec
import uvicorn
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Message, Receive, Scope, Send
from uvicorn.supervisors import Multiprocess

from app.errors import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_PREFIX, ProblemDetail
from app.headers import API_HEADERS

APP = "app.asgi:create_app"
WORKER_HEALTHCHECK_SECONDS = 30
SHUTDOWN_RETRY_AFTER_SECONDS = 5
logger = logging.getLogger("app.serving")

_STOPPED = msgspec.json.encode(
    ProblemDetail(
        type=PROBLEM_TYPE_PREFIX + "service-unavailable",
        title="Service Unavailable",
        status=503,
        detail="The server is shutting down and stopped this request before it finished; retry it.",
    )
)


def answer_requests_cut_off_by_shutdown(app: ASGIApp) -> ASGIApp:
    """Middleware: a request still running when the grace period ends gets a 503 problem, not a bare 500.

    uvicorn cancels such requests and, when nothing has been sent yet, answers with its own plain-text
    500 and an error trace in the log. The request did not finish, so the client is told to retry.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if started:
                raise
            logger.warning("%s %s stopped by the end of the shutdown grace period", scope["method"], scope["path"])
            headers = {
                **API_HEADERS,
                "content-type": PROBLEM_MEDIA_TYPE,
                "content-length": str(len(_STOPPED)),
                "retry-after": str(SHUTDOWN_RETRY_AFTER_SECONDS),
                "connection": "close",
            }
            start: HTTPResponseStartEvent = {
                "type": "http.response.start",
                "status": 503,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            }
            body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": _STOPPED, "more_body": False}
            await send(start)
            await send(body)
            # Not re-raised: uvicorn cancelled the request only to end it, and it has ended with an answer.

    return middleware


class WorkerSupervisor(Multiprocess):
    """uvicorn's supervisor for several worker processes, which also stops accepting connections at once.

    The supervisor binds the listening socket and hands it to its workers. uvicorn's own keeps its copy
    open until every worker has exited, so during the drain the kernel would still accept new connections
    that no process ever serves: clients would hang, then see a reset. Closing it before the workers are
    told to stop makes new connections refused as soon as the workers close theirs, as with one process.
    """

    def terminate_all(self) -> None:
        """Close the supervisor's listening socket, then signal each worker to stop."""
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


def _stopped_on_request(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def run(*, host: str, port: int, workers: int, reload: bool, log_config: dict[str, Any], grace_seconds: int) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully (see the module docstring)."""
    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "log_config": log_config,
        "server_header": False,
        "timeout_graceful_shutdown": grace_seconds,
    }
    # With one process uvicorn drains, then re-raises the SIGTERM it caught, which would end the process
    # by the signal (status 143) although it stopped cleanly; this handler turns that into status 0,
    # like SIGINT and like the supervisor of several workers.
    signal.signal(signal.SIGTERM, _stopped_on_request)
    if workers > 1 and not reload:
        # A new worker answers the supervisor's health check only once it has imported the app; uvicorn's
        # 5 s default kills workers that a busy or cold machine takes longer to start, again and again.
        config = uvicorn.Config(APP, workers=workers, timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS, **options)
        WorkerSupervisor(config, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.run(APP, workers=1, reload=reload, **options)  # 1, not None: uvicorn would read WEB_CONCURRENCY
