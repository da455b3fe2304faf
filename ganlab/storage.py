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
