"""The cluster stack on 127.0.0.1, from real servers: PostgreSQL (Debian's), an S3-compatible server (moto),
``ganlab server`` on both, and Ray nodes started with ``ray start`` as the cluster launcher does.

PostgreSQL and moto run as ``WatchedProcess``es (ganlab/tracking/server.py): they die with the process that
started them even when it is SIGKILLed. ``ray start`` daemonizes, so a ``RayNodes`` is stopped in a
``finally`` by killing the processes that carry its tag (``own_processes``): never ``ray stop``, which stops
every Ray of the machine, a study's beside the tests included. Used by the cluster tests and by
benchmarks/cluster_stack.py.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ganlab.tracking.server import WatchedProcess, free_port, port_free
from ganlab.tracking.store import server_problem

VENV_BIN = Path(sys.executable).parent
# what every process of the stack sees for S3: moto accepts any credentials
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


PROCESS_TAG = "GANLAB_TEST_PROCESSES"


def own_processes(env: dict[str, str]) -> dict[str, str]:
    """``env`` with a tag of its own that every process started with it passes on to its children (Ray's
    daemons, raylets, workers, a job's driver): ``kill_tagged`` finds exactly them, whoever their parent is now."""
    import secrets

    return {**env, PROCESS_TAG: secrets.token_hex(8)}


def kill_tagged(env: dict[str, str], timeout_s: float = 60) -> None:
    """SIGKILL every process of this machine started with ``env``'s tag, until none is left."""
    mark = f"{PROCESS_TAG}={env[PROCESS_TAG]}".encode()
    deadline = time.monotonic() + timeout_s
    while True:
        left = [pid for pid in _pids() if mark in _environ(pid)]
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and int(p.name) != os.getpid()]


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def pg_binary(name: str) -> str:
    """initdb/postgres from PATH or Debian's /usr/lib/postgresql/<version>/bin (the newest)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} not found: install Debian's postgresql (make postgres)")
    return found


def wait_for(check, timeout_s: float, what: str, proc: WatchedProcess | None = None, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what}: the process exited ({proc.last_line()})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout_s:.0f} s" + (f" ({proc.last_line()})" if proc else ""))
        time.sleep(every_s)


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster in a new directory under /tmp (the unprivileged user it runs as must
    reach it; pytest's own temp dirs are root's alone), on 127.0.0.1 only, trust auth for user ganlab."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ganlab-pg-", dir="/tmp")))
    port: int = 0
    proc: WatchedProcess | None = None

    def uri(self, database: str = "mlflow") -> str:
        return f"postgresql://ganlab@127.0.0.1:{self.port}/{database}"

    def start(self) -> Postgres:
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root
        self.root.mkdir(parents=True, exist_ok=True)
        if as_user:
            shutil.chown(self.root, "postgres")
        data = self.root / "data"
        subprocess.run([*as_user, pg_binary("initdb"), "-D", str(data), "-U", "ganlab", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, timeout=120)
        self.port = free_port()
        log = self.root / "postgres.log"
        log.touch()
        if as_user:
            shutil.chown(log, "postgres")
        self.proc = WatchedProcess([*as_user, pg_binary("postgres"), "-D", str(data), "-p", str(self.port),
                                    "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                                    "-c", "max_connections=200"], log)
        wait_for(lambda: self._connects("postgres"), 60, "postgres start", self.proc)
        self.sql("create database mlflow")
        return self

    def _connects(self, database: str) -> bool:
        import psycopg

        try:
            psycopg.connect(self.uri(database), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def sql(self, statement: str, database: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.uri(database), autocommit=True) as con:
            cur = con.execute(statement)
            return cur.fetchall() if cur.description else []

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class S3Server:
    """moto's S3-compatible server on 127.0.0.1, with ``bucket`` created."""

    root: Path
    bucket: str = "ganlab"
    port: int = 0
    proc: WatchedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {**S3_ENV, "AWS_ENDPOINT_URL": self.endpoint, "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def start(self) -> S3Server:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = WatchedProcess([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                   self.root / "moto.log", {**os.environ, **S3_ENV})
        wait_for(lambda: server_problem(self.endpoint, 2, "/moto-api/") is None, 60, "moto start", self.proc)
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@dataclass
class TrackingServer:
    """``ganlab server`` on PostgreSQL + S3 (it watches its own mlflow server); restartable on its port."""

    backend: str
    artifacts: str
    env: dict[str, str]
    cwd: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    boot_s: float = 0.0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TrackingServer:
        wait_for(lambda: port_free("127.0.0.1", self.port), 60, f"port {self.port} released by an earlier server")
        start = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "ganlab.cli", "server", "--backend-store-uri", self.backend,
                                      "--artifacts-destination", self.artifacts, "--port", str(self.port),
                                      "--workers", "2"], cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        for line in self.proc.stdout:
            if line.startswith("tracking_uri: "):
                assert line.split(": ", 1)[1].strip() == self.uri
                self.boot_s = time.monotonic() - start
                return self
        raise RuntimeError(f"ganlab server exited {self.proc.wait()} before answering")

    def stop(self, sig: int = 15) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self.proc.stdout.close()
        return code


@dataclass
class RayNodes:
    """A Ray head and worker nodes started with ``ray start`` (separate daemon processes), 1 CPU each.

    Started from an environment like an activated venv's (``PATH`` first), as a user's shell would be:
    Ray jobs run their entrypoint with it. Token authentication is on, with a token of this cluster's own
    that ``env`` hands to every process that talks to it (Ray turns it on for a head whenever
    ~/.ray/auth_token exists, and a joining node without the token is refused). ``stop`` kills its processes
    and theirs (``own_processes``), no other Ray.
    """

    base_env: dict[str, str]
    temp_dir: Path
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    worker_manager_ports: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def token_file(self) -> Path:
        return self.temp_dir / "auth_token"

    @property
    def env(self) -> dict[str, str]:
        """The environment of a process that uses this cluster: its auth token, and the base environment."""
        return {**self.base_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file)}

    def _ray(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "ray"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def start(self, workers: int = 1) -> RayNodes:
        import secrets

        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(secrets.token_hex(32))
        self.token_file.chmod(0o600)
        head = self._ray("start", "--head", "--port", str(self.gcs_port), "--node-ip-address", "127.0.0.1",
                         "--num-cpus", "1", "--num-gpus", "0", "--include-dashboard", "true", "--dashboard-host",
                         "127.0.0.1", "--dashboard-port", str(self.dashboard_port), "--temp-dir", str(self.temp_dir),
                         "--disable-usage-stats", *self._own_ports(), "--ray-client-server-port", str(free_port()))
        if head.returncode != 0:
            raise RuntimeError(f"ray start --head failed: {head.stderr[-2000:]}")
        for _ in range(workers):
            port = free_port()
            node = self._ray("start", "--address", self.address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                             "--num-gpus", "0", "--node-manager-port", str(port), *self._own_ports())
            if node.returncode != 0:
                raise RuntimeError(f"ray start --address failed: {node.stderr[-2000:]}")
            self.worker_manager_ports.append(port)
        wait_for(lambda: len(self.nodes(alive=True)) == 1 + workers, 120, "ray nodes joining", every_s=1)
        # a node is ALIVE before its dashboard agent is: till then `ray job submit` says "No available agent"
        said: list[str] = []
        try:
            wait_for(lambda: self._takes_a_job(said), 120, "the head taking a Ray job", every_s=1)
        except RuntimeError as e:
            raise RuntimeError(f"{e}: {said[-1][-1500:] if said else ''}") from None
        return self

    @staticmethod
    def _own_ports() -> list[str]:
        """A node's dashboard-agent port of its own: Ray's fixed default (52365) is taken by the first node of the
        machine, and a head whose agent lost it takes no job ("No available agent to submit job")."""
        return ["--dashboard-agent-listen-port", str(free_port())]

    def _takes_a_job(self, said: list[str]) -> bool:
        out = self._ray("job", "submit", "--address", self.dashboard, "--no-wait", "--", "true", timeout=60)
        said.append(out.stdout + out.stderr)
        return out.returncode == 0

    def nodes(self, alive: bool = True) -> list[dict]:
        """The cluster's nodes as Ray's state API lists them (node_id, is_head_node, state, ...)."""
        out = self._ray("list", "nodes", "--address", self.dashboard, "--format", "json", timeout=60)
        if out.returncode != 0:
            return []
        nodes = json.loads(out.stdout)
        return [n for n in nodes if n.get("state") == "ALIVE"] if alive else nodes

    def raylet_pid(self, manager_port: int) -> int:
        """The raylet process of the worker node started with ``--node-manager-port manager_port``."""
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"/raylet") and f"--node_manager_port={manager_port}".encode() in cmd:
                return int(proc.name)
        raise RuntimeError(f"no raylet with node manager port {manager_port}")

    def __post_init__(self) -> None:
        self.base_env = own_processes(self.base_env)

    def stop(self) -> None:
        kill_tagged(self.base_env)
