"""Short-lived store credentials limited to one job's prefix (STS ``AssumeRole``).

A machine that should not hold the user's long-lived keys (a Kaggle session, whose only other
way in is a secret attached by hand in the web editor) gets credentials that

- expire after ``duration_s`` (STS allows 15 min to the role's maximum session duration, at most
  12 h; 1 h when the caller's own credentials come from a role: "role chaining"), and
- can only read, write, list and delete under ``s3://bucket/<prefix>/``: the inline session
  policy below is intersected with the role's own policy, so they can never do more than either.

The role (``role_arn``) is the user's: one that the launching credentials may assume and that may
use the bucket (``infra/`` has a least-privilege policy to start from). Stores without STS (R2,
B2) have their own temporary-credential APIs, which this module does not call.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from launcher.store.base import StoreError
from launcher.store.s3 import _import_boto3, endpoint_from_env, parse_s3_uri

MIN_DURATION, MAX_DURATION = 900, 12 * 3600
OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                  "s3:ListMultipartUploadParts")


def prefix_policy(bucket: str, prefix: str) -> dict[str, Any]:
    """The session policy: objects under ``prefix/`` only, and listing only below it."""
    prefix = prefix.strip("/")
    under = f"{prefix}/*" if prefix else "*"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "JobObjects", "Effect": "Allow", "Action": list(OBJECT_ACTIONS),
         "Resource": f"arn:aws:s3:::{bucket}/{under}"},
        {"Sid": "JobListing", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}",
         "Condition": {"StringLike": {"s3:prefix": [under, prefix] if prefix else ["*"]}}},
    ]}


def scoped_credentials(uri: str, role_arn: str, duration_s: float, session_name: str,
                       endpoint_url: str | None = None) -> dict[str, Any]:
    """``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` valid for
    ``duration_s`` (clamped to what STS allows) and limited to ``uri``'s prefix, plus
    ``expires_at`` (epoch seconds). StoreError when STS refuses."""
    bucket, prefix = parse_s3_uri(uri)
    boto3 = _import_boto3()
    from botocore.exceptions import BotoCoreError, ClientError

    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_STS") or endpoint_from_env()
    name = re.sub(r"[^\w+=,.@-]", "-", session_name)[:64] or "launch"
    try:
        sts = boto3.session.Session().client("sts", endpoint_url=endpoint,
                                             region_name=None if not endpoint else "us-east-1")
        resp = sts.assume_role(RoleArn=role_arn, RoleSessionName=name, Policy=json.dumps(prefix_policy(bucket, prefix)),
                               DurationSeconds=int(min(MAX_DURATION, max(MIN_DURATION, duration_s))))
    except (BotoCoreError, ClientError) as e:
        raise StoreError(f"cannot get temporary credentials for {uri} (sts:AssumeRole {role_arn}): {e}") from None
    c = resp["Credentials"]
    return {"AWS_ACCESS_KEY_ID": c["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
            "AWS_SESSION_TOKEN": c["SessionToken"], "expires_at": c["Expiration"].timestamp()}
