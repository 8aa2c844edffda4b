"""Model artifacts in an S3-compatible object store, beside the registry in PostgreSQL.

With ``MLFN_ARTIFACT_URL=s3://BUCKET/PREFIX`` (and ``MLFN_DATABASE_URL``) the registry
keeps each version's metadata, file names, sha256 and object keys in PostgreSQL, and the
files' bytes go to the bucket. ``MLFN_ARTIFACT_ENDPOINT_URL`` names an S3-compatible
server (MinIO, Ceph, a cloud's own); unset: AWS S3. Credentials and region come from the
standard chain of boto3 (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, a web identity, an instance role).

A version is whole or absent: :meth:`S3Artifacts.write` uploads under keys no other
attempt uses (``PREFIX/<model>/<random>/<file>``) *before* the registry's transaction
allocates the number, inserts the rows that name the objects (``s3://BUCKET/KEY``) and
moves the pointer, so a committed row names a complete object. A publisher that dies
between the upload and the commit leaves unreferenced objects and no version. Every
read is checked against the recorded sha256 by the registry.

Example:
    >>> S3Artifacts("s3://models/mlfn", endpoint_url="http://127.0.0.1:9000")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from runtime.errors import ModelStoreError, StoreUnavailableError

__all__ = ["S3Artifacts", "parse_s3_url"]


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix/")`` (prefix may be empty).

    Raises:
        ValueError: not an ``s3://BUCKET[/PREFIX]`` URL.
    """
    if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
        raise ValueError(
            f"MLFN_ARTIFACT_URL must be s3://BUCKET[/PREFIX], got {url!r}; e.g. s3://ml-models/mlfn"
        )
    bucket, _, prefix = url[5:].partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class S3Artifacts:
    """Model files as objects of one bucket, under one prefix; thread-safe.

    Args:
        url: ``s3://BUCKET[/PREFIX]`` (MLFN_ARTIFACT_URL).
        endpoint_url: an S3-compatible server's URL (MLFN_ARTIFACT_ENDPOINT_URL).
        client: a boto3 S3 client (default: one made for ``endpoint_url``).
    """

    def __init__(self, url: str, *, endpoint_url: str | None = None, client: Any = None) -> None:
        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self.endpoint_url = endpoint_url
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url or None,
                config=Config(
                    connect_timeout=5,
                    read_timeout=60,
                    retries={"max_attempts": 3, "mode": "standard"},
                ),
            )
        self._client = client

    def __repr__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"S3Artifacts({self.url!r}{where})"

    @contextlib.contextmanager
    def _converted(self, what: str) -> Iterator[None]:
        """botocore's errors -> the runtime's, in one place, the cause kept."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        try:
            yield
        except NoCredentialsError as err:
            raise ModelStoreError(
                f"cannot {what} in {self.url}: no credentials; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (on a cluster: the Secret named by MLFN_ARTIFACT_SECRET)"
            ) from err
        except EndpointConnectionError as err:
            where = f" at {self.endpoint_url}" if self.endpoint_url else ""
            raise StoreUnavailableError(
                f"cannot {what}: the object store{where} is unreachable ({err}); check "
                "MLFN_ARTIFACT_ENDPOINT_URL (mlfn retries)"
            ) from err
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code == "NoSuchBucket":
                raise ModelStoreError(
                    f"cannot {what}: bucket {self.bucket!r} does not exist; create it or fix "
                    "MLFN_ARTIFACT_URL"
                ) from err
            if code in ("NoSuchKey", "404"):
                raise ModelStoreError(
                    f"cannot {what}: the object is missing from {self.url}; it was deleted "
                    "by hand: publish a new version"
                ) from err
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                raise ModelStoreError(
                    f"cannot {what} in {self.url}: access denied ({code}); check the "
                    "credentials and the bucket's policy"
                ) from err
            raise StoreUnavailableError(f"cannot {what} in {self.url}: {err}") from err
        except BotoCoreError as err:
            raise StoreUnavailableError(f"cannot {what} in {self.url}: {err}") from err

    def write(self, model: str, files: Mapping[str, bytes]) -> dict[str, str]:
        """Upload the files of one version under fresh keys; returns file -> ``s3://`` URI."""
        base = f"{self.prefix}{model}/{uuid.uuid4().hex}/"
        uris: dict[str, str] = {}
        for fname, blob in files.items():
            key = base + fname
            with self._converted(f"write s3://{self.bucket}/{key}"):
                self._client.put_object(Bucket=self.bucket, Key=key, Body=blob)
            uris[fname] = f"s3://{self.bucket}/{key}"
        return uris

    def read(self, uri: str) -> bytes:
        """The bytes of the object ``uri`` (``s3://BUCKET/KEY``, as :meth:`write` gave it)."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        with self._converted(f"read {uri}"):
            body = self._client.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()
