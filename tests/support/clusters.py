"""Throwaway PostgreSQL clusters and PgBouncers, started by a test with the binaries on the machine.

Tests that must change the server itself (TLS, ``pg_hba.conf``, stopping it) cannot use the shared test
server; they start their own cluster here: ``initdb`` into a temporary folder, a free port, ``pg_ctl``.
A cluster takes about 2 s to create and start. Everything runs as the ``postgres`` user when the tests
run as root (``initdb`` and ``pgbouncer`` refuse root), as the current user otherwise.

Use them through a fixture that stops and deletes them, e.g.::

    @pytest.fixture(scope="session")
    def cluster() -> Iterator[Cluster]:
        with throwaway_cluster(hba=["host all all 127.0.0.1/32 trust"]) as running:
            yield running

``PG_BIN`` is the folder of ``initdb``/``pg_ctl`` (default: the newest in ``/usr/lib/postgresql/*/bin``).
Without the binaries the tests skip locally and fail in CI (``CI=true``), like the other PostgreSQL tests.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url

from tests.support.environment import IN_CI
from tests.support.ports import free_port


def _pg_bin() -> Path:
    """``PG_BIN``, else the newest Debian-style ``/usr/lib/postgresql/<version>/bin`` that has ``initdb``."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(x) for x in p.parent.parent.name.split(".") if x.isdigit()],
    )
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
START_TIMEOUT_SECONDS = 30


def unavailable(message: str) -> None:
    """Skip the test (fail it in CI, where every test must run)."""
    if IN_CI:
        pytest.fail(message + " (CI must run this test)")
    pytest.skip(message)


def _run_as() -> dict[str, Any]:
    """``subprocess`` arguments that run a child as ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        unavailable("running as root, but there is no postgres user to run initdb and pgbouncer as")
        raise  # unreachable: unavailable() raises
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "env": {**os.environ, "HOME": user.pw_dir}}


def _owned_temp_dir(prefix: str) -> Path:
    """A new temporary folder that the child processes' user owns."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


def _wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)  # polling a condition, bounded by the deadline
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Cluster:
    """A PostgreSQL cluster in ``directory`` on 127.0.0.1:``port``; superuser ``postgres``."""

    directory: Path
    port: int
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.directory / "server.log"

    @property
    def data(self) -> Path:
        """The data directory (``PGDATA``)."""
        return self.directory / "data"

    def url(self, database: str = "postgres", user: str = "postgres", password: str | None = None) -> str:
        """A ``postgresql://`` URL for this cluster (add ``?sslmode=…`` yourself)."""
        credentials = quote(user, safe="") + (f":{quote(password, safe='')}" if password is not None else "")
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *args: str) -> None:
        """Run ``pg_ctl`` on this cluster as its owner."""
        subprocess.run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_SECONDS + 5,
            **_run_as(),
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self.pg_ctl("-w", "-t", str(START_TIMEOUT_SECONDS), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` rolls back open transactions; ``immediate`` is a crash)."""
        self.pg_ctl("-w", "-m", mode, "stop")

    def is_running(self) -> bool:
        """True while the postmaster runs."""
        return (self.data / "postmaster.pid").exists()

    def server_log(self) -> str:
        """What the server wrote to its log, for assertion messages."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def throwaway_cluster(
    *,
    hba: Sequence[str],
    settings: Mapping[str, str] | None = None,
    files: Mapping[str, bytes] | None = None,
) -> Iterator[Cluster]:
    """Create, start, yield, then stop and delete a cluster.

    ``hba`` are the ``pg_hba.conf`` lines (a local socket line with ``trust`` is always added, for admin work);
    ``settings`` go to ``postgresql.conf``; ``files`` are written into the data directory with mode 0600
    (certificates and keys).
    """
    if not (PG_BIN / "initdb").exists():
        unavailable(f"no PostgreSQL binaries in {PG_BIN} (set PG_BIN)")
    run_as = _run_as()
    cluster = Cluster(_owned_temp_dir("todo-cluster-"), free_port())
    try:
        subprocess.run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(cluster.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            timeout=60,
            **run_as,
        )
        for name, content in (files or {}).items():
            path = cluster.data / name
            path.write_bytes(content)
            path.chmod(0o600)
            if "user" in run_as:
                os.chown(path, run_as["user"], run_as["group"])
        config = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(cluster.port),
            "unix_socket_directories": f"'{cluster.directory}'",
            "fsync": "off",  # a throwaway cluster: speed over crash safety of the machine
            "log_connections": "on",
            **(settings or {}),
        }
        with (cluster.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in config.items())
        (cluster.data / "pg_hba.conf").write_text("\n".join(["local all all trust", *hba]) + "\n")
        cluster.start()
    except BaseException:
        shutil.rmtree(cluster.directory, ignore_errors=True)
        raise
    try:
        yield cluster
    finally:
        if cluster.is_running():
            with contextlib.suppress(subprocess.SubprocessError):
                cluster.stop("immediate")
        shutil.rmtree(cluster.directory, ignore_errors=True)


def self_signed_certificate(common_name: str = "localhost") -> tuple[bytes, bytes]:
    """A fresh self-signed certificate and its key (PEM), valid for ``common_name`` and 127.0.0.1."""
    if not Path(OPENSSL).exists():
        unavailable("openssl is not installed")
    with tempfile.TemporaryDirectory() as folder:
        key, cert = Path(folder) / "server.key", Path(folder) / "server.crt"
        subprocess.run(
            [
                OPENSSL,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                f"/CN={common_name}",
                "-addext",
                f"subjectAltName=DNS:{common_name},IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return cert.read_bytes(), key.read_bytes()


@dataclass
class PgBouncer:
    """A running ``pgbouncer`` on 127.0.0.1:``port``."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]

    def url(self, database: str, user: str = "postgres") -> str:
        """A ``postgresql://`` URL that goes through this PgBouncer."""
        return f"postgresql://{quote(user, safe='')}@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        """What PgBouncer logged, for assertion messages."""
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def running_pgbouncer(
    server_url: str, *, pool_mode: str = "transaction", pool_size: int = 4, users: Sequence[str] = ("postgres",)
) -> Iterator[PgBouncer]:
    """Start PgBouncer in front of the server of ``server_url`` (every database; clients need no password).

    ``pool_size`` server connections per database and user: fewer than the app's clients, so server
    connections are shared between clients, as on Neon's pooler.
    """
    server = make_url(server_url)
    target = f"host={server.host or '127.0.0.1'} port={server.port or 5432}"
    if server.password:
        target += f" password={server.password}"
    if not Path(PGBOUNCER).exists():
        unavailable("pgbouncer is not installed (apt-get install pgbouncer)")
    directory = _owned_temp_dir("todo-pgbouncer-")
    port = free_port()
    (directory / "userlist.txt").write_text("".join(f'"{user}" ""\n' for user in users))
    (directory / "pgbouncer.ini").write_text(
        f"""[databases]
* = {target}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "userlist.txt"}
pool_mode = {pool_mode}
default_pool_size = {pool_size}
max_client_conn = 500
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
"""
    )
    process = subprocess.Popen(
        [PGBOUNCER, str(directory / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **_run_as(),
    )
    bouncer = PgBouncer(directory, port, process)
    try:
        try:
            _wait_for_port(port, process)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"pgbouncer did not start: {exc}\n{bouncer.log()}") from exc
        yield bouncer
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)
