"""The declaration in infra/ and the least-privilege policy rendered from it."""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from launcher.store import StoreError, check_writable, open_store
from launcher.store.declaration import (
    BucketDeclaration,
    DeclarationError,
    load_declaration,
    render_policy,
)

REPO = Path(__file__).resolve().parents[2]
BUCKET = "ckpt-bucket"


# --- the declaration ------------------------------------------------------------------------------
def test_the_repository_declaration_is_the_recommended_one():
    decl = load_declaration(REPO / "infra" / "bucket.yaml")
    defaults = BucketDeclaration()
    assert decl.versioning and decl.public_access_block
    assert decl.encryption.algorithm == "AES256"
    assert decl.lifecycle.abort_incomplete_multipart_days == 1
    assert decl.lifecycle == defaults.lifecycle and decl.encryption == defaults.encryption
    assert decl.tags == {"purpose": "launch-checkpoints"}


def test_unknown_keys_are_an_error_naming_the_key(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("versionning: true\n")
    with pytest.raises(DeclarationError, match=r"b.yaml: versionning: Extra inputs are not permitted"):
        load_declaration(path)


@pytest.mark.parametrize("text, where", [
    ("lifecycle: {abort_incomplete_multipart_days: 0}", "lifecycle.abort_incomplete_multipart_days"),
    ("encryption: {algorithm: DES}", "encryption.algorithm"),
    ("encryption: {algorithm: AES256, kms_key_id: k}", "kms_key_id needs algorithm: aws:kms"),
    ("- a list", "expected a mapping"),
    ("versioning: [", "invalid YAML"),
])
def test_invalid_declarations(tmp_path, text, where):
    path = tmp_path / "b.yaml"
    path.write_text(text + "\n")
    with pytest.raises(DeclarationError, match=where.replace("[", r"\[")):
        load_declaration(path)


def test_a_missing_declaration_file(tmp_path):
    with pytest.raises(DeclarationError, match="cannot read the bucket declaration"):
        load_declaration(tmp_path / "nope.yaml")


def test_example_policy_in_infra_is_current():
    rendered = render_policy(load_declaration(REPO / "infra" / "bucket.yaml"), "my-checkpoints",
                             "runs/job-1")
    assert json.loads((REPO / "infra" / "policy.example.json").read_text()) == rendered


# --- the policy, evaluated directly ---------------------------------------------------------------
def allowed(policy, action, resource, context=None):
    """IAM evaluation for identity policies made only of Allow statements: some statement's
    Action, Resource and every Condition must match; otherwise the default deny applies."""
    context = context or {}

    def listed(x):
        return x if isinstance(x, list) else [x]

    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        if not any(fnmatchcase(action.lower(), a.lower()) for a in listed(st["Action"])):
            continue
        if not any(fnmatchcase(resource, r) for r in listed(st["Resource"])):
            continue
        ok = True
        for op, conds in st.get("Condition", {}).items():
            for key, patterns in conds.items():
                value = context.get(key)
                match = fnmatchcase if op == "StringLike" else str.__eq__
                assert op in ("StringLike", "StringEquals"), op
                ok = ok and value is not None and any(match(value, p) for p in listed(patterns))
        if ok:
            return True
    return False


@pytest.fixture
def policy():
    return render_policy(BucketDeclaration(), BUCKET, "runs/job-1/")


OBJ = f"arn:aws:s3:::{BUCKET}/"


@pytest.mark.parametrize("action", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                    "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"])
def test_object_actions_are_allowed_under_the_job_prefix_only(policy, action):
    assert allowed(policy, action, OBJ + "runs/job-1/ckpt/step-00000100/model.pt")
    assert allowed(policy, action, OBJ + "runs/job-1/metrics.jsonl")
    assert not allowed(policy, action, OBJ + "runs/job-2/ckpt/step-00000100/model.pt")
    assert not allowed(policy, action, OBJ + "runs/job-10/metrics.jsonl")  # a sibling prefix
    assert not allowed(policy, action, OBJ + "runs/job-1")  # the prefix itself is not below it
    assert not allowed(policy, action, "arn:aws:s3:::other-bucket/runs/job-1/x")


def test_listing_is_allowed_for_the_job_prefix_only(policy):
    bucket = f"arn:aws:s3:::{BUCKET}"
    assert allowed(policy, "s3:ListBucket", bucket, {"s3:prefix": "runs/job-1/ckpt/"})
    assert allowed(policy, "s3:ListBucket", bucket, {"s3:prefix": "runs/job-1"})
    assert not allowed(policy, "s3:ListBucket", bucket, {"s3:prefix": "runs/"})
    assert not allowed(policy, "s3:ListBucket", bucket, {"s3:prefix": "runs/job-10/"})
    assert not allowed(policy, "s3:ListBucket", bucket)  # no prefix: the whole bucket


@pytest.mark.parametrize("action", ["s3:DeleteBucket", "s3:PutBucketPolicy", "s3:PutBucketVersioning",
                                    "s3:PutLifecycleConfiguration", "s3:ListAllMyBuckets",
                                    "s3:ListBucketMultipartUploads", "s3:GetObjectVersion"])
def test_nothing_else_is_allowed(policy, action):
    for resource in (f"arn:aws:s3:::{BUCKET}", OBJ + "runs/job-1/x", "*"):
        assert not allowed(policy, action, resource)
    for st in policy["Statement"]:
        assert "*" not in "".join(st["Action"]) and st["Resource"] != "*"


def test_a_bucket_wide_policy_has_no_prefix_condition():
    doc = render_policy(BucketDeclaration(partition="aws-cn"), BUCKET, "")
    assert allowed(doc, "s3:ListBucket", f"arn:aws-cn:s3:::{BUCKET}")
    assert allowed(doc, "s3:PutObject", f"arn:aws-cn:s3:::{BUCKET}/anything")


# --- the policy, enforced by moto -----------------------------------------------------------------
def test_moto_enforces_the_policy_on_a_job_store(monkeypatch):
    import boto3
    from moto import mock_aws
    from moto.core import set_initial_no_auth_action_count

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    doc = render_policy(BucketDeclaration(), BUCKET, "runs/job-1")

    @set_initial_no_auth_action_count(5)  # the 5 set-up calls below run as the admin
    def scenario():
        s3, iam = boto3.client("s3"), boto3.client("iam")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="runs/job-2/secret", Body=b"not yours")
        iam.create_user(UserName="job-1")
        iam.put_user_policy(UserName="job-1", PolicyName="launch-job", PolicyDocument=json.dumps(doc))
        key = iam.create_access_key(UserName="job-1")["AccessKey"]
        client = boto3.client("s3", aws_access_key_id=key["AccessKeyId"],
                              aws_secret_access_key=key["SecretAccessKey"])

        own = open_store(f"s3://{BUCKET}/runs/job-1", client=client)
        own.put_bytes("metrics.jsonl", b"{}\n")
        assert own.get_bytes("metrics.jsonl") == b"{}\n"
        own.delete("metrics.jsonl")
        check_writable(own.uri, client=client)

        other = open_store(f"s3://{BUCKET}/runs/job-2", client=client)
        with pytest.raises(StoreError, match="access denied"):
            other.get_bytes("secret")
        with pytest.raises(StoreError, match="access denied"):
            other.put_bytes("x", b"1")
        with pytest.raises(StoreError, match=r"not writable .*launch store init s3://\S+/runs/job-10"):
            check_writable(f"s3://{BUCKET}/runs/job-10", client=client)

    with mock_aws():
        scenario()
