"""A local S3 API (moto in server mode) for the remote-copy tests: real HTTP on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bmc_pipeline.devdb import free_port

CREDENTIALS = {"key": "testing", "secret": "testing"}


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_options(endpoint: str) -> dict[str, Any]:
    """``storage.remote_options`` for s3fs against that endpoint."""
    return {**CREDENTIALS, "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}


def make_bucket(endpoint: str, name: str, *, object_lock: bool = False) -> None:
    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
