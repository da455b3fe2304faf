"""Where a sweep's state or a server's artifacts may live: a local folder, or a URI (s3://, gs://, ...) whose
bucket and credentials are checked before anything starts. No Ray here: ``ganlab server`` uses it too."""

from __future__ import annotations

from pathlib import Path

from ganlab.errors import GanlabError


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def check_storage(path: str) -> None:
    """GanlabError (one line) unless ``path`` can hold a sweep: for ``s3://`` its bucket exists and the
    credentials may use it; a local path must be a folder that can be made and written (not a file)."""
    if not is_remote(path):
        from ganlab.files import check_output_dir

        check_output_dir(path, "storage")
        return
    scheme, _, rest = path.partition("://")
    if scheme != "s3":
        filesystem(path)  # gs://, hdfs://, ...: pyarrow says whether it can reach it
        return
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise GanlabError(f"storage {path!r} names no bucket: give s3://BUCKET/PREFIX")
    import boto3
    import botocore.exceptions as errors

    try:
        # a fresh session: boto3's default one keeps the credentials it found first for the whole process
        boto3.session.Session().client("s3").head_bucket(Bucket=bucket)
    except errors.NoCredentialsError:
        raise GanlabError(f"storage {path}: no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                          "AWS_PROFILE, or run where an instance profile gives them)") from None
    except errors.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise GanlabError(f"storage {path}: bucket {bucket!r} does not exist (create it, or fix storage_path)") \
                from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise GanlabError(f"storage {path}: the credentials may not use bucket {bucket!r} ({code})") from None
        raise GanlabError(f"storage {path}: S3 refused ({code or exc})") from None
    except errors.EndpointConnectionError as exc:
        raise GanlabError(f"storage {path}: S3 endpoint not reachable ({exc.kwargs.get('endpoint_url', exc)})") \
            from None


def filesystem(path: str):
    """(pyarrow filesystem, path inside it) for a local path or a URI."""
    import pyarrow.fs

    if not is_remote(path):
        return pyarrow.fs.LocalFileSystem(), str(Path(path).resolve())
    try:
        return pyarrow.fs.FileSystem.from_uri(path)
    except Exception as exc:  # pyarrow's ArrowInvalid / OSError for an unknown scheme or bad URI
        raise GanlabError(f"storage {path!r}: {' '.join(str(exc).split())}") from None


def check_sqlite(db: Path) -> None:
    """GanlabError (one line) unless ``db`` is a sqlite database (MLflow would print a long traceback)."""
    import sqlite3

    try:
        with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as con:
            con.execute("select count(*) from sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise GanlabError(f"tracking store {db}: not an MLflow sqlite database ({exc}); point "
                          "MLFLOW_TRACKING_URI at another file or move this one away") from None


# (table, column) of every artifact location MLflow keeps in a sqlite store
_ARTIFACT_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                     ("model_versions", "source"), ("model_versions", "storage_location"),
                     ("logged_models", "artifact_location"))


def relocate_moved_store(db: Path) -> str | None:
    """Point a moved or copied sqlite store at its own ``mlartifacts`` folder; what was done, or None.

    Runs logged without a server keep absolute ``file://`` artifact locations (MLflow resolves them when an
    experiment is created), so a store folder copied elsewhere would show no images. ganlab's stores keep their
    artifacts in ``mlartifacts`` beside the database: when that folder exists here and the recorded one does
    not, every recorded ``file://.../mlartifacts`` prefix is rewritten to this one (runs logged through a
    server use ``mlflow-artifacts:`` locations, which follow the server's own folder anyway).
    """
    import sqlite3
    from urllib.parse import unquote, urlparse

    here = (db.resolve().parent / "mlartifacts")
    if not here.is_dir():
        return None
    new = here.as_uri()
    with sqlite3.connect(str(db), timeout=30) as con:
        tables = {row[0] for row in con.execute("select name from sqlite_master where type = 'table'")}
        if "experiments" not in tables:
            return None
        old_roots = set()
        for (location,) in con.execute("select artifact_location from experiments"):
            if location and location.startswith("file://") and "/mlartifacts/" in location:
                old_roots.add(location[:location.index("/mlartifacts/") + len("/mlartifacts")])
        moved = [old for old in old_roots if old != new and not Path(unquote(urlparse(old).path)).is_dir()]
        if not moved:
            return None
        for table, column in _ARTIFACT_COLUMNS:
            if table not in tables:
                continue
            if column not in {row[1] for row in con.execute(f"pragma table_info({table})")}:
                continue
            for old in moved:
                con.execute(f"update {table} set {column} = ? || substr({column}, ?) where {column} like ? escape '!'",
                            (new, len(old) + 1, old.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"))
    return f"store {db} was moved: its artifact paths now point at {here} (were {', '.join(sorted(moved))})"


def check_database(uri: str, scheme: str, timeout_s: float) -> None:
    """GanlabError (one line) unless the database store at ``uri`` accepts a connection within ``timeout_s``."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    try:
        url = make_url(uri)
    except Exception:
        raise GanlabError(f"tracking store {uri!r} is not a valid database URI") from None
    shown = url.render_as_string(hide_password=True)
    timeout = {"connect_timeout": int(timeout_s)} if scheme in ("postgresql", "mysql", "mariadb") else {}
    try:
        engine = create_engine(url, connect_args=timeout)
        with engine.connect():
            pass
        engine.dispose()
    except ModuleNotFoundError as exc:
        raise GanlabError(f"tracking store {shown}: its database driver is not installed ({exc.name}); "
                          "pip install 'ganlab[cluster]'") from None
    except Exception as exc:
        first = next((line.strip() for line in str(getattr(exc, "orig", None) or exc).splitlines() if line.strip()),
                     type(exc).__name__)
        raise GanlabError(f"cannot connect to the tracking database {shown}: {first}") from None
