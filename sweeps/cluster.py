"""Ray for a sweep: join a running cluster (``--address``) or start a local one, and check that a
trial's resources fit a node before Tune would leave it PENDING forever.

A local Ray is ganlab's own: ``ray start --head --block`` under the same watchdog as the served MLflow store
(ganlab.tracking.server.WatchedProcess), so every Ray process (GCS, raylet, its agents, the workers) lives in one
process group that ends with the driver however the driver ends, SIGKILL included (``ray.init()`` would leave its
agents running for minutes). Its node is 127.0.0.1 and only there does it listen: no dashboard, no autoscaler
monitor, and the loopback address kept (``ray.init`` and ``ray start`` rewrite 127.0.0.1 to the machine's address
unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which makes a single-node Ray). Drivers and workers present a token
made for this process (RAY_AUTH_MODE=token) unless the user chose an auth mode.

On a cluster, trials on other nodes get the driver's S3 endpoint settings (FORWARDED_ENV) through the
job's runtime environment; credentials stay each node's own (instance profile or its environment).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ganlab.errors import ConfigError, GanlabError
from sweeps.spec import Resources

# where trials on other nodes find an S3-compatible store (credentials stay each node's own)
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "AWS_REGION",
                 "AWS_DEFAULT_REGION")


def init_ray(address: str | None) -> bool:
    """Join ``address`` or start a local Ray; False when Ray was already up (the caller's to stop).

    GanlabError (one line) when there is no cluster at ``address``, before anything is written.
    """
    import ray

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    check_ray_address(address)
    if ray.is_initialized():
        return False
    if not address and not os.environ.get("RAY_ADDRESS"):  # inside `ray job submit`: join the job's cluster
        address = start_local_ray()
    runtime_env = None
    if address:
        forwarded = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
        runtime_env = {"env_vars": forwarded} if forwarded else None
    try:
        with _stderr_kept_unless_it_fails():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                     runtime_env=runtime_env)
    except Exception as exc:
        from ray.exceptions import AuthenticationError

        stop_local_ray()  # a local Ray this driver started and could not join ends here
        if not isinstance(exc, (ConnectionError, AuthenticationError)):
            raise
        reason = str(exc).strip().splitlines()[0][:160]
        if address in (None, "auto") and not isinstance(exc, AuthenticationError):
            raise GanlabError(f"--address {address}: no Ray cluster answers there ({reason}); start one with "
                              "`ray start --head`") from None
        # something listens there (_check_ray_address) but let this driver in: most often a missing token
        raise GanlabError(f"--address {address}: the Ray cluster there refused this driver ({reason}); if it uses "
                          "token authentication, set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH to its token file "
                          "(or RAY_AUTH_TOKEN)") from None
    return True


_LOCAL_HEAD = None  # the WatchedProcess of the local Ray this process started, if any
_ADDRESS_FILE: tuple[Path, str | None, str] | None = None  # Ray's "current cluster" file, what it held, ours


def start_local_ray(timeout_s: float = 90.0) -> str:
    """Start this driver's own single-node Ray on 127.0.0.1 (see the module's doc); its GCS address."""
    import socket
    import time

    import torch

    from ganlab.device import usable_cores
    from ganlab.tracking.server import WatchedProcess, free_port

    global _LOCAL_HEAD
    _token_auth()
    port = free_port()
    _remember_address_file(f"127.0.0.1:{port}")
    fd, log = tempfile.mkstemp(prefix="ganlab-ray-", suffix=".log")
    os.close(fd)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={port}", "--include-dashboard=false", "--disable-usage-stats",
           f"--num-cpus={usable_cores()}", f"--num-gpus={torch.cuda.device_count()}"]
    head = WatchedProcess(cmd, Path(log), env, kill=True)  # a throwaway cluster: Tune's state is the driver's
    _single_node(True)  # this driver too: else ray.init turns 127.0.0.1 into the machine's address
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        if not head.alive() or time.monotonic() > deadline:
            head.stop()
            _restore_address_file()
            raise GanlabError(f"the local Ray did not start ({head.last_line()}); its log is kept at {log}")
        time.sleep(0.2)
    Path(log).unlink(missing_ok=True)  # kept only for a start that failed: a killed driver leaves no file behind
    _LOCAL_HEAD = head
    return f"127.0.0.1:{port}"


def _token_auth() -> None:
    """Token authentication for this process's local Ray, as ``ray.init()`` turns it on for a new local cluster,
    with a token made for this process (not written anywhere): in the environment the head and its workers
    inherit, and in this process's Ray config, read at import (what Ray's own ``_enable_token_auth`` does). A
    RAY_AUTH_MODE the user set is left as it is, for the head too."""
    import secrets

    from ray._raylet import AuthenticationTokenLoader, Config

    if "RAY_AUTH_MODE" in os.environ:  # the user's choice, or ours from an earlier local Ray of this process
        return
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _remember_address_file(ours: str) -> None:
    """`ray start --head` points Ray's "current cluster" file (what ``address="auto"`` joins) at the new head:
    keep what it held, to put back when this Ray stops (a user's own cluster stays the one "auto" finds)."""
    from ray._common.utils import get_ray_address_file

    global _ADDRESS_FILE
    path = Path(get_ray_address_file(None))
    _ADDRESS_FILE = (path, path.read_text() if path.is_file() else None, ours)


def _restore_address_file() -> None:
    global _ADDRESS_FILE
    if _ADDRESS_FILE is None:
        return
    path, before, ours = _ADDRESS_FILE
    _ADDRESS_FILE = None
    with contextlib.suppress(OSError):
        if path.is_file() and path.read_text().strip() == ours:
            if before is None:
                path.unlink()
            else:
                path.write_text(before)


def _single_node(on: bool) -> None:
    """RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 for this process, where Ray read it at import (Ray's own switch for a
    one-node, loopback-only Ray), or back to the default."""
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = not on and not ray_constants.IS_WINDOWS_OR_OSX


def stop_local_ray() -> None:
    """Disconnect, and end the local Ray this process started (if it did), waiting for its processes."""
    import ray

    global _LOCAL_HEAD
    ray.shutdown()
    _single_node(False)
    if _LOCAL_HEAD is not None:
        _LOCAL_HEAD.stop()
        Path(_LOCAL_HEAD.log).unlink(missing_ok=True)
        _LOCAL_HEAD = None
    _restore_address_file()


@contextlib.contextmanager
def _stderr_kept_unless_it_fails() -> Iterator[None]:
    """Around ray.init: what is written to fd 2 (Ray's C++ client warns once a second while a cluster refuses
    it) goes to stderr afterwards if the block succeeds, and is dropped if it fails: the failure is then
    said in one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        sys.stderr.write(held.read().decode(errors="replace"))
        sys.stderr.flush()


def check_ray_address(address: str | None, timeout_s: float = 3.0) -> None:
    """A HOST:PORT or ray://HOST:PORT address must accept a connection (Ray itself would wait a minute);
    GanlabError (one line) if not. None (a local Ray) and 'auto' pass."""
    import socket

    if address in (None, "auto"):
        return  # ray.init finds the local cluster or fails at once
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise GanlabError(f"--address {address!r}: give 'auto', HOST:PORT (the head's GCS port, 6379 by default) or "
                          "ray://HOST:10001")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise GanlabError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); start one "
                          "with `ray start --head`, or leave --address out for a local Ray") from None


def check_resources(resources: Resources, *, joined: bool, nodes: list[dict[str, float]] | None = None) -> None:
    """A trial's cpu/gpu must fit on one node, or it stays PENDING forever: ConfigError on a local Ray.

    ``nodes``: each node's resources ({"CPU": .., "GPU": ..}); default: the running Ray's. On a joined
    cluster an autoscaler may still add such nodes, so there it is a warning.
    """
    nodes = _alive_nodes() if nodes is None else nodes
    need = {"CPU": resources.cpu, "GPU": resources.gpu}
    if any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes):
        return
    most = {k: max((node.get(k, 0.0) for node in nodes), default=0.0) for k in need}
    message = (f"resources: a trial asks for cpu={resources.cpu:g}, gpu={resources.gpu:g}, but no "
               f"node of this Ray cluster has that much (the largest: {most['CPU']:g} CPUs, {most['GPU']:g} GPUs)")
    if not joined:
        raise ConfigError(message)
    print(f"ganlab sweep: warning: {message}; trials wait until the autoscaler adds such a node", file=sys.stderr)


def _alive_nodes() -> list[dict[str, float]]:
    """Each live node's resources in the running Ray."""
    import ray

    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def this_machine() -> list[dict[str, float]]:
    """The one node a local Ray starts with: this process's usable cores and its GPUs (before Ray runs; a Ray
    already running in this process reports its own)."""
    import ray
    import torch

    from ganlab.device import usable_cores

    if ray.is_initialized():
        return _alive_nodes()
    return [{"CPU": float(usable_cores()), "GPU": float(torch.cuda.device_count())}]


def _in_a_ray_job_working_dir() -> bool:
    try:
        cwd = os.getcwd()
    except FileNotFoundError:
        return True
    return f"{os.sep}runtime_resources{os.sep}working_dir_files{os.sep}" in cwd


def import_the_project_in_a_ray_job() -> None:
    """Import every module of ganlab, sweeps, analysis and studies now, when this driver runs from a Ray job's
    working_dir: the runtime-env agent deletes and re-extracts that folder once trials start on this node, and a
    module first imported then (the evaluator's, the frontier searcher's) is not there (ModuleNotFoundError)."""
    if not _in_a_ray_job_working_dir():
        return
    import importlib
    import pkgutil

    for top in ("ganlab", "sweeps", "analysis", "studies"):
        package = importlib.import_module(top)
        for module in pkgutil.walk_packages(package.__path__, prefix=f"{top}."):
            importlib.import_module(module.name)


def leave_a_ray_job_working_dir() -> None:
    """Run from a directory that lasts when this driver is a Ray job's entrypoint (``ray job submit
    --working-dir``): Ray's runtime-env agent deletes and re-extracts the job's working_dir when a trial's
    worker sets it up on the driver's node, and the driver's own cwd would vanish under it (Tune then fails
    in os.getcwd()). Paths the sweep needs are absolute by then (storage, tracking store, spec)."""
    if _in_a_ray_job_working_dir():
        os.chdir(tempfile.gettempdir())
