"""A real S3 endpoint for the tests: moto's standalone server, on a free port of this machine.

Every test gets a bucket of its own (`S3Bucket`), so tests never see each other's objects; the
settings it gives point deltatune's S3 engine, and any worker process started with them, at it.
"""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

ACCESS_KEY = "deltatune-tests"
SECRET_KEY = "deltatune-tests-secret"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Bucket:
    endpoint_url: str
    name: str
    prefix: str = "deltatune"

    def environment(self) -> dict[str, str]:
        """The DELTATUNE_S3_* variables that point a deltatune process at this bucket."""
        return {
            "DELTATUNE_S3_ENDPOINT_URL": self.endpoint_url,
            "DELTATUNE_S3_BUCKET": self.name,
            "DELTATUNE_S3_PREFIX": self.prefix,
            "DELTATUNE_S3_REGION": REGION,
            "DELTATUNE_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "DELTATUNE_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def settings_fields(self) -> dict[str, str]:
        return {name.removeprefix("DELTATUNE_").lower(): value for name, value in self.environment().items()}

    def object_keys(self) -> list[str]:
        """Every key in the bucket, the prefix included."""
        pages = _client(self.endpoint_url).get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def new_bucket(endpoint_url: str) -> S3Bucket:
    bucket = S3Bucket(endpoint_url, f"deltatune-{uuid.uuid4().hex[:12]}")
    _client(endpoint_url).create_bucket(Bucket=bucket.name)
    return bucket


def _client(endpoint_url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer  # imported here: it brings Flask and much of AWS

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> S3Bucket:
    return new_bucket(s3_endpoint)


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder
