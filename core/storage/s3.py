"""The S3 engine: keys under a prefix in one bucket of any S3-compatible store, through boto3.

For API and workers on separate hosts. An object appears whole or not at all (a PUT, or a multipart
upload that boto3 aborts on failure and S3 shows only once completed); a folder is uploaded file by
file with its manifest last, and whatever a failed publish had uploaded is removed again. A folder is
published at a key no reader uses until a row names it (an attempt's or checkpoint's own id), or
until its manifest is there (resume points).
"""

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from core.storage import CHUNK_BYTES, MANIFEST, ObjectInfo, StoreUnavailable, upload_order

logger = logging.getLogger(__name__)

MISSING = ("404", "NoSuchKey", "NotFound")
DELETE_BATCH = 1000  # S3's limit per DeleteObjects request


class S3Storage:
    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        # No keys given: boto3's own chain (AWS_* variables, ~/.aws, an instance role) finds them.
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            config=Config(retries={"mode": "standard"}, connect_timeout=10),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, source: Path, key: str) -> None:
        # boto3 switches to a multipart upload above 8 MiB and aborts it if a part fails.
        with _store_errors(f"storing {key}"):
            self.client.upload_file(str(source), self.bucket, self._key(key))
        source.unlink(missing_ok=True)

    def put_bytes(self, data: bytes, key: str) -> None:
        with _store_errors(f"storing {key}"):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def publish_folder(self, source: Path, prefix: str, *, move: bool) -> None:
        try:
            with _store_errors(f"storing {prefix}"):
                for path in upload_order(source):
                    name = path.relative_to(source).as_posix()
                    self.client.upload_file(str(path), self.bucket, self._key(f"{prefix}/{name}"))
        except BaseException:
            # Nothing else uses this prefix yet (see the module's docstring): take back what landed.
            # If the store is gone that fails too; no row names the leftovers, and sweeps clear them.
            try:
                self.remove_folder(prefix)
            except Exception:
                logger.warning("could not take back the partial upload of %s", prefix, exc_info=True)
            raise
        if move:
            shutil.rmtree(source, ignore_errors=True)

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            with _store_errors(f"reading {key}"):
                head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if _missing(error):
                return None
            raise
        return ObjectInfo(int(head["ContentLength"]), head["LastModified"].timestamp())

    def read_chunks(self, key: str) -> Iterator[bytes]:
        try:
            with _store_errors(f"reading {key}"):
                body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except ClientError as error:
            if _missing(error):
                raise FileNotFoundError(key) from None
            raise
        try:
            with _store_errors(f"reading {key}"):
                yield from body.iter_chunks(CHUNK_BYTES)
        finally:
            body.close()

    def local_path(self, key: str) -> Path | None:
        return None

    def local_file(self, key: str, scratch: Path) -> Path:
        target = scratch / key
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # boto3 downloads beside the target and renames: a target that exists is whole.
            with _store_errors(f"reading {key}"):
                self.client.download_file(self.bucket, self._key(key), str(target))
        except ClientError as error:
            if _missing(error):
                raise FileNotFoundError(key) from None
            raise
        return target

    def local_folder(self, prefix: str, scratch: Path) -> Path | None:
        keys = self._list(prefix)
        if not keys:
            return None
        for key in keys:
            self.local_file(key, scratch)
        return scratch / prefix

    def folders(self, prefix: str) -> list[str]:
        start = self._key(prefix) + "/"
        names = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=start, Delimiter="/"
        )
        with _store_errors(f"listing {prefix}"):
            for page in pages:
                found = (common["Prefix"] for common in page.get("CommonPrefixes", []))
                names += [name[len(start) :].rstrip("/") for name in found]
        return sorted(names)

    def remove(self, key: str) -> None:
        with _store_errors(f"removing {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def remove_folder(self, prefix: str) -> None:
        keys = self._list(prefix)
        # Manifests first, the reverse of publishing: a removal cut short leaves no manifest naming
        # files that are gone.
        manifests = {key for key in keys if key.rsplit("/", 1)[-1] == MANIFEST}
        self._delete(sorted(manifests))
        self._delete([key for key in keys if key not in manifests])

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": self._key(key)} for key in keys[start : start + DELETE_BATCH]]
            with _store_errors(f"removing {batch[0]['Key']}..."):
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def problem(self) -> str | None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            return f"bucket {self.bucket!r}: {error.response.get('Error', {}).get('Code', 'error')}"
        except Exception as error:  # no connection, no credentials: botocore's own errors
            return f"bucket {self.bucket!r}: {type(error).__name__}"
        return None

    def _list(self, prefix: str) -> list[str]:
        """Every key under `prefix/`, without the engine's own prefix."""
        start = self._key(prefix) + "/"
        skip = len(self._key(""))
        keys = []
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start)
        with _store_errors(f"listing {prefix}"):
            for page in pages:
                keys += [item["Key"][skip:] for item in page.get("Contents", [])]
        return keys


def _missing(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code")) in MISSING


@contextmanager
def _store_errors(what: str) -> Iterator[None]:
    """The store's outages as StoreUnavailable (the API answers 503 with Retry-After), whatever
    boto3 call met them; a refusal (no such key, access denied) stays what it is."""
    try:
        yield
    except Exception as error:
        if _unavailable(error):
            raise StoreUnavailable(f"the object store is unavailable ({what}): {error}") from error
        raise


def _unavailable(error: BaseException | None) -> bool:
    # boto3's transfers wrap the botocore error they met (S3UploadFailedError): follow the chain.
    while error is not None:
        if isinstance(error, BotoConnectionError | HTTPClientError):
            return True
        if isinstance(error, ClientError):
            return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) >= 500
        error = error.__cause__ or error.__context__
    return False
