"""Plan and apply of the declared bucket settings, one by one, against moto."""

from __future__ import annotations

import pytest

from launcher.store import infra
from launcher.store.base import StoreError
from launcher.store.declaration import BucketDeclaration, Lifecycle

BUCKET = "ckpt-bucket"
PAB_ON = dict.fromkeys(infra.PAB_KEYS, True)


@pytest.fixture
def client(moto_s3):
    return infra.make_client()


@pytest.fixture
def decl():
    return BucketDeclaration(tags={"team": "vision"})


def actions(plan):
    return {c.setting: c.action for c in plan.changes}


def init(client, decl, bucket=BUCKET):
    return infra.apply(client, bucket, decl, infra.plan(client, bucket, decl))


def test_plan_on_an_empty_account_creates_everything(client, decl):
    plan = infra.plan(client, BUCKET, decl)
    assert not plan.exists
    assert actions(plan) == dict.fromkeys(
        ["bucket", "versioning", "encryption", "public_access_block", "lifecycle", "tags"], "create")
    assert client.list_buckets()["Buckets"] == []  # planning changes nothing


def test_apply_creates_the_bucket_and_every_setting(client, decl):
    results = init(client, decl)
    assert [(r.setting, r.status) for r in results] == [
        ("bucket", "created"), ("versioning", "created"), ("encryption", "created"),
        ("public_access_block", "created"), ("lifecycle", "created"), ("tags", "created")]
    assert client.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    rule = client.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert client.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"] == PAB_ON
    [lc] = client.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert lc["ID"] == infra.LIFECYCLE_RULE_ID and lc["Status"] == "Enabled"
    assert lc["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert lc["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    assert client.get_bucket_tagging(Bucket=BUCKET)["TagSet"] == [{"Key": "team", "Value": "vision"}]


def test_a_second_run_changes_nothing(client, decl):
    init(client, decl)
    plan = infra.plan(client, BUCKET, decl)
    assert set(actions(plan).values()) == {"ok"} and plan.pending == []
    assert infra.apply(client, BUCKET, decl, plan) == []


def test_an_existing_bucket_is_adopted(client, decl):
    client.create_bucket(Bucket=BUCKET)
    plan = infra.plan(client, BUCKET, decl)
    assert actions(plan)["bucket"] == "ok" and actions(plan)["versioning"] == "create"


def suspend_versioning(c):
    c.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})


def switch_to_kms(c):
    c.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]})


def loosen_public_access(c):
    c.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration={
        **PAB_ON, "BlockPublicPolicy": False})


def lengthen_noncurrent_expiry(c):
    c.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [
        {"ID": infra.LIFECYCLE_RULE_ID, "Status": "Enabled", "Filter": {"Prefix": ""},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 365}}]})


def retag(c):
    c.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [{"Key": "team", "Value": "nlp"}]})


def remove_lifecycle(c):
    c.delete_bucket_lifecycle(Bucket=BUCKET)


def remove_public_access_block(c):
    c.delete_public_access_block(Bucket=BUCKET)


@pytest.mark.parametrize("setting, drift, action", [
    ("versioning", suspend_versioning, "change"),
    ("encryption", switch_to_kms, "change"),
    ("public_access_block", loosen_public_access, "change"),
    ("public_access_block", remove_public_access_block, "create"),
    ("lifecycle", lengthen_noncurrent_expiry, "change"),
    ("lifecycle", remove_lifecycle, "create"),
    ("tags", retag, "change"),
])
def test_drift_is_detected_and_repaired(client, decl, setting, drift, action):
    init(client, decl)
    drift(client)
    plan = infra.plan(client, BUCKET, decl)
    assert {s: a for s, a in actions(plan).items() if a != "ok"} == {setting: action}
    assert [(r.setting, r.status) for r in infra.apply(client, BUCKET, decl, plan)] == [
        (setting, "created" if action == "create" else "changed")]
    assert infra.plan(client, BUCKET, decl).pending == []


def test_other_lifecycle_rules_and_tags_are_kept(client, decl):
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [
        {"ID": "expire-tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"},
         "Expiration": {"Days": 3}}]})
    client.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [{"Key": "owner", "Value": "ana"}]})
    init(client, decl)
    rules = client.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert sorted(r["ID"] for r in rules) == ["expire-tmp", infra.LIFECYCLE_RULE_ID]
    tags = {t["Key"]: t["Value"] for t in client.get_bucket_tagging(Bucket=BUCKET)["TagSet"]}
    assert tags == {"owner": "ana", "team": "vision"}


def test_unmanaged_settings_are_left_alone(client):
    decl = BucketDeclaration(versioning=False, encryption=None, public_access_block=False,
                             lifecycle=Lifecycle(abort_incomplete_multipart_days=None,
                                                 noncurrent_version_expiration_days=None))
    assert actions(infra.plan(client, BUCKET, decl)) == {"bucket": "create"}
    init(client, decl)
    assert "Status" not in client.get_bucket_versioning(Bucket=BUCKET)


def test_lifecycle_with_only_the_multipart_rule(client):
    decl = BucketDeclaration(lifecycle=Lifecycle(noncurrent_version_expiration_days=None))
    init(client, decl)
    [rule] = client.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert "NoncurrentVersionExpiration" not in rule
    assert infra.plan(client, BUCKET, decl).pending == []


def test_bucket_is_created_in_the_declared_region(client):
    init(client, BucketDeclaration(region="eu-west-1"))
    assert client.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == "eu-west-1"


def client_error(code, status, op):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "from the test"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, op)


def fail(client, op, code, status):
    def handler(**_):
        raise client_error(code, status, op)
    client.meta.events.register(f"before-parameter-build.s3.{op}", handler)


def test_settings_the_endpoint_lacks_are_reported_not_failed(client, decl):
    fail(client, "GetPublicAccessBlock", "NotImplemented", 501)
    fail(client, "PutPublicAccessBlock", "NotImplemented", 501)
    plan = infra.plan(client, BUCKET, decl)
    assert actions(plan)["public_access_block"] == "create"  # the bucket is missing: not read yet
    results = {r.setting: r for r in infra.apply(client, BUCKET, decl, plan)}
    assert results["public_access_block"].status == "unsupported"
    assert results["public_access_block"].message == "not supported by this endpoint"
    assert results["versioning"].status == "created"
    plan = infra.plan(client, BUCKET, decl)
    assert actions(plan)["public_access_block"] == "unsupported"
    assert plan.pending == []  # a second run is still a no-op


def test_a_setting_accepted_but_not_kept_is_reported_as_unsupported(client, decl):
    def swallow(**_):  # the endpoint answers 200 and ignores the setting
        from botocore.awsrequest import AWSResponse
        return AWSResponse("http://x", 200, {}, None), {}
    client.meta.events.register("before-call.s3.PutBucketTagging", swallow)
    results = {r.setting: r for r in init(client, decl)}
    assert results["tags"].status == "unsupported"
    assert "accepted, but reads back {}" in results["tags"].message


def test_a_failed_setting_is_reported_and_the_rest_applied(client, decl):
    fail(client, "PutBucketEncryption", "AccessDenied", 403)
    results = {r.setting: r.status for r in init(client, decl)}
    assert results == {"bucket": "created", "versioning": "created", "encryption": "failed",
                       "public_access_block": "created", "lifecycle": "created", "tags": "created"}


def test_a_read_error_is_a_store_error(client, decl):
    client.create_bucket(Bucket=BUCKET)
    fail(client, "GetBucketVersioning", "InternalError", 500)
    with pytest.raises(StoreError, match="read versioning of bucket 'ckpt-bucket'"):
        infra.plan(client, BUCKET, decl)


def test_someone_elses_bucket(client, decl):
    fail(client, "HeadBucket", "403", 403)
    with pytest.raises(StoreError, match="exists but these credentials cannot access it"):
        infra.plan(client, BUCKET, decl)
