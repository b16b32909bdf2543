"""The checkpoint bucket, declared as data (``infra/bucket.yaml``), and the least-privilege access
policy rendered from it for one job prefix.

The model's defaults are the recommended settings, so a missing file means "the defaults"; the
repository's ``infra/bucket.yaml`` spells them out. A setting declared as ``false``/``null``/empty
is not managed: ``launch store init`` leaves it as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from launcher.store.base import StoreError

DEFAULT_PATH = Path("infra") / "bucket.yaml"
ENV_CONFIG = "LAUNCH_STORE_CONFIG"


class DeclarationError(StoreError):
    """The bucket declaration file is missing or invalid."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Encryption(_Model):
    algorithm: Literal["AES256", "aws:kms"] = "AES256"
    kms_key_id: str | None = None  # only with aws:kms; None: the AWS-managed key

    @model_validator(mode="after")
    def _kms_key_needs_kms(self) -> Encryption:
        if self.kms_key_id and self.algorithm != "aws:kms":
            raise ValueError("kms_key_id needs algorithm: aws:kms")
        return self


class Lifecycle(_Model):
    # Parts of uploads cut short by a preemption are billed until aborted.
    abort_incomplete_multipart_days: int | None = Field(1, ge=1)
    # With versioning on, overwritten and deleted checkpoints linger as non-current versions.
    noncurrent_version_expiration_days: int | None = Field(30, ge=1)


class BucketDeclaration(_Model):
    versioning: bool = True
    encryption: Encryption | None = Field(default_factory=Encryption)
    public_access_block: bool = True
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    tags: dict[str, str] = Field(default_factory=dict)
    # Where to create the bucket on AWS; None: the client's region. S3-compatible endpoints
    # ignore it unless set.
    region: str | None = None
    partition: str = "aws"  # ARN partition of the policy: aws, aws-cn, aws-us-gov


def default_declaration_path() -> Path | None:
    """``$LAUNCH_STORE_CONFIG``, else ``./infra/bucket.yaml`` when it exists, else None (the
    built-in defaults)."""
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    return DEFAULT_PATH if DEFAULT_PATH.is_file() else None


def load_declaration(path: str | os.PathLike | None = None) -> BucketDeclaration:
    """The declaration in ``path`` (YAML), or from :func:`default_declaration_path`."""
    import yaml

    path = Path(path) if path is not None else default_declaration_path()
    if path is None:
        return BucketDeclaration()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise DeclarationError(f"cannot read the bucket declaration {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise DeclarationError(f"invalid YAML in {path}: {e}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise DeclarationError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return BucketDeclaration.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise DeclarationError(f"{path}: {where}: {first['msg']}") from None


# --- the least-privilege policy for one job prefix ----------------------------------------------
OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                  "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]


def render_policy(decl: BucketDeclaration, bucket: str, prefix: str) -> dict[str, Any]:
    """An IAM policy that lets its holder list, read, write and delete under ``prefix/`` of
    ``bucket`` and nothing else (an empty prefix means the whole bucket). Multipart uploads
    work; listing and aborting *other* multipart uploads in the bucket does not."""
    bucket_arn = f"arn:{decl.partition}:s3:::{bucket}"
    prefix = prefix.strip("/")
    listing: dict[str, Any] = {"Sid": "ListJobPrefix", "Effect": "Allow",
                               "Action": ["s3:ListBucket"], "Resource": bucket_arn}
    if prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}
    objects = {"Sid": "ReadWriteJobPrefix", "Effect": "Allow", "Action": list(OBJECT_ACTIONS),
               "Resource": f"{bucket_arn}/{prefix}/*" if prefix else f"{bucket_arn}/*"}
    return {"Version": "2012-10-17", "Statement": [listing, objects]}
