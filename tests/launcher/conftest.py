"""Fixtures shared by the launcher's unit tests: moto's in-process S3 and stores over it."""

from __future__ import annotations

import pytest

from launcher.store import open_store

BUCKET = "ckpt-bucket"


@pytest.fixture
def moto_s3(monkeypatch):
    """moto's in-process AWS with fake credentials, no bucket; yields an S3 client."""
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        import boto3

        yield boto3.client("s3", region_name="us-east-1")


@pytest.fixture
def aws(moto_s3):
    """moto with the bucket ``BUCKET`` created; yields an S3 client."""
    moto_s3.create_bucket(Bucket=BUCKET)
    return moto_s3


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    """The same job-prefix store on file:// and on s3:// (moto)."""
    if request.param == "file":
        return open_store(f"file://{tmp_path}/bucket/runs/job-1")
    request.getfixturevalue("aws")
    return open_store(f"s3://{BUCKET}/runs/job-1")
