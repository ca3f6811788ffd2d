"""Run the app under uvicorn with a graceful stop: what ``manage.py serve`` does after its checks.

On SIGTERM (or SIGINT) the server stops accepting connections at once, lets the requests it has accepted
finish for up to ``SHUTDOWN_GRACE_SECONDS``, answers any still running after that with a 503 problem
(``app.edge``), runs the app's shutdown (closing the database pool) and exits with status 0. The same
holds with several workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.supervisors import Multiprocess

if TYPE_CHECKING:
    from config.settings import Settings

APP = "app.asgi:create_app"
HTTP_PROTOCOL = "app.http_protocol:BoundedHttpToolsProtocol"  # an import string: workers import it themselves
WORKER_HEALTHCHECK_SECONDS = 30
logger = logging.getLogger("app.serving")


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


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files to the hard limit (workers inherit it); return both.

    Every client connection and every database connection is a file descriptor; many systems start
    processes at a soft limit of 1,024 while allowing far more. ``MAX_CONNECTIONS`` then refuses connections
    (503) well before the process runs out.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:  # a container may forbid it; the cap still protects the process
            logger.warning("could not raise the open-file limit from %d: %s", soft, exc)
        else:
            soft = wanted
    return soft, hard


@contextlib.contextmanager
def metrics_folder(settings: Settings) -> Iterator[None]:
    """With ``METRICS_ENABLED``, the folder where every worker writes its metrics (prometheus_client's
    multiprocess mode reads ``PROMETHEUS_MULTIPROC_DIR`` when it is imported, so it is set before workers
    start): ``PROMETHEUS_MULTIPROC_DIR`` emptied of a previous run's files, or a temporary folder removed
    when the server stops."""
    if not settings.metrics_enabled:
        yield
        return
    if settings.prometheus_multiproc_dir:
        folder = Path(settings.prometheus_multiproc_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # counters of a previous run would be added to this one's
            stale.unlink()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        yield
        return
    with tempfile.TemporaryDirectory(prefix="todo-metrics-") as temporary:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = temporary
        yield


def _stopped_on_request(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def run(
    *,
    host: str,
    port: int,
    workers: int,
    reload: bool,
    log_config: dict[str, Any],
    grace_seconds: int,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully (see the module docstring).

    uvicorn's access log is off (it does not even build the line): the app writes its own (``app.edge``).
    """
    raise_open_file_limit()
    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "log_config": log_config,
        "server_header": False,
        "timeout_graceful_shutdown": grace_seconds,
        "access_log": False,
        "http": HTTP_PROTOCOL,
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
