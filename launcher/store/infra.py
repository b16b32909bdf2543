"""Compare a live bucket with its declaration and apply only the difference, like an IaC tool.

    p = plan(client, "my-bucket", decl)        # read-only: one Change per setting
    results = apply(client, "my-bucket", decl, p)

Every setting is a :class:`Setting`: how to read its live value (normalised, ``None`` when never
set), whether that matches the declared value, and how to apply the declared one. Applying a
setting that already matches is skipped, so running twice changes nothing the second time.
S3-compatible endpoints that lack a setting (``NotImplemented`` and kin) get the action
``unsupported`` ("not supported by this endpoint") instead of failing the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from launcher.store.base import StoreError
from launcher.store.declaration import BucketDeclaration

UNSUPPORTED_CODES = {"NotImplemented", "NotImplementedError", "XNotImplemented", "NotSupported",
                     "UnsupportedOperation", "Unsupported", "MethodNotAllowed"}
UNSUPPORTED = "not supported by this endpoint"
LIFECYCLE_RULE_ID = "launch-checkpoints"
PAB_KEYS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


def _code(exc: BaseException) -> str:
    from launcher.store.s3 import error_code

    return error_code(exc)


def _unsupported(exc: BaseException) -> bool:
    status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _code(exc) in UNSUPPORTED_CODES or status == 501


def _read_or(default: Any, missing_codes: set[str], call: Callable[[], Any]) -> Any:
    """``call()``; ``default`` when the endpoint says the configuration does not exist."""
    try:
        return call()
    except Exception as e:
        if _code(e) in missing_codes:
            return default
        raise


@dataclass
class Setting:
    name: str
    declared: Any
    read: Callable[[Any, str], Any]
    apply: Callable[[Any, str, Any], None]  # (client, bucket, live value)
    matches: Callable[[Any, Any], bool] = lambda live, declared: live == declared


# --- the settings ---------------------------------------------------------------------------------
def _versioning() -> Setting:
    def read(c, b):
        return c.get_bucket_versioning(Bucket=b).get("Status") or None

    def apply(c, b, live):
        c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})

    return Setting("versioning", "Enabled", read, apply)


def _encryption(decl: BucketDeclaration) -> Setting:
    declared = {"algorithm": decl.encryption.algorithm, "kms_key_id": decl.encryption.kms_key_id}

    def read(c, b):
        def get():
            rule = c.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]["Rules"][0]
            default = rule.get("ApplyServerSideEncryptionByDefault", {})
            return {"algorithm": default.get("SSEAlgorithm"),
                    "kms_key_id": default.get("KMSMasterKeyID")}
        return _read_or(None, {"ServerSideEncryptionConfigurationNotFoundError"}, get)

    def apply(c, b, live):
        default = {"SSEAlgorithm": declared["algorithm"]}
        if declared["kms_key_id"]:
            default["KMSMasterKeyID"] = declared["kms_key_id"]
        c.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": default}]})

    def matches(live, want):
        return bool(live) and live["algorithm"] == want["algorithm"] and (
            want["kms_key_id"] is None or live["kms_key_id"] == want["kms_key_id"])

    return Setting("encryption", declared, read, apply, matches)


def _public_access_block() -> Setting:
    def read(c, b):
        def get():
            conf = c.get_public_access_block(Bucket=b)["PublicAccessBlockConfiguration"]
            return {k: bool(conf.get(k)) for k in PAB_KEYS}
        return _read_or(None, {"NoSuchPublicAccessBlockConfiguration"}, get)

    def apply(c, b, live):
        c.put_public_access_block(Bucket=b, PublicAccessBlockConfiguration=dict.fromkeys(PAB_KEYS, True))

    return Setting("public_access_block", dict.fromkeys(PAB_KEYS, True), read, apply)


def _lifecycle_rules(c, b) -> list[dict[str, Any]]:
    return _read_or([], {"NoSuchLifecycleConfiguration"},
                    lambda: c.get_bucket_lifecycle_configuration(Bucket=b)["Rules"])


def _lifecycle(decl: BucketDeclaration) -> Setting:
    """One rule of ours, ``launch-checkpoints`` on the whole bucket; other rules are kept."""
    lc = decl.lifecycle
    declared = {"abort_incomplete_multipart_days": lc.abort_incomplete_multipart_days,
                "noncurrent_version_expiration_days": lc.noncurrent_version_expiration_days}

    def read(c, b):
        ours = [r for r in _lifecycle_rules(c, b) if r.get("ID") == LIFECYCLE_RULE_ID]
        if not ours or ours[0].get("Status") != "Enabled":
            return None
        rule = ours[0]
        return {"abort_incomplete_multipart_days":
                rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation"),
                "noncurrent_version_expiration_days":
                rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays")}

    def apply(c, b, live):
        rule: dict[str, Any] = {"ID": LIFECYCLE_RULE_ID, "Status": "Enabled", "Filter": {"Prefix": ""}}
        if lc.abort_incomplete_multipart_days:
            rule["AbortIncompleteMultipartUpload"] = {
                "DaysAfterInitiation": lc.abort_incomplete_multipart_days}
        if lc.noncurrent_version_expiration_days:
            rule["NoncurrentVersionExpiration"] = {
                "NoncurrentDays": lc.noncurrent_version_expiration_days}
        others = [r for r in _lifecycle_rules(c, b) if r.get("ID") != LIFECYCLE_RULE_ID]
        c.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": others + [rule]})

    return Setting("lifecycle", declared, read, apply)


def _tags(decl: BucketDeclaration) -> Setting:
    """Declared tags are added or corrected; other tags on the bucket are kept."""
    def read(c, b):
        tagset = _read_or([], {"NoSuchTagSet", "NoSuchTagSetError"},
                          lambda: c.get_bucket_tagging(Bucket=b)["TagSet"])
        return {t["Key"]: t["Value"] for t in tagset}

    def apply(c, b, live):
        merged = {**(live or {}), **decl.tags}
        c.put_bucket_tagging(Bucket=b, Tagging={
            "TagSet": [{"Key": k, "Value": v} for k, v in sorted(merged.items())]})

    def matches(live, want):
        return live is not None and all(live.get(k) == v for k, v in want.items())

    return Setting("tags", dict(decl.tags), read, apply, matches)


def settings_for(decl: BucketDeclaration) -> list[Setting]:
    """The managed settings, in the order they are applied (after the bucket itself)."""
    out = []
    if decl.versioning:
        out.append(_versioning())
    if decl.encryption is not None:
        out.append(_encryption(decl))
    if decl.public_access_block:
        out.append(_public_access_block())
    if decl.lifecycle.abort_incomplete_multipart_days or decl.lifecycle.noncurrent_version_expiration_days:
        out.append(_lifecycle(decl))
    if decl.tags:
        out.append(_tags(decl))
    return out


# --- plan and apply -------------------------------------------------------------------------------
@dataclass
class Change:
    setting: str
    action: str  # "create" (never set), "change" (set otherwise), "ok", "unsupported"
    live: Any
    declared: Any
    note: str = ""


@dataclass
class Plan:
    bucket: str
    exists: bool
    changes: list[Change] = field(default_factory=list)

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action in ("create", "change")]

    def to_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "exists": self.exists, "to_change": len(self.pending),
                "changes": [asdict(c) for c in self.changes]}


@dataclass
class Result:
    setting: str
    status: str  # "created", "changed", "unsupported", "failed"
    message: str = ""


def bucket_exists(client: Any, bucket: str) -> bool:
    try:
        client.head_bucket(Bucket=bucket)
        return True
    except Exception as e:
        if _code(e) in ("404", "NoSuchBucket", "NotFound"):
            return False
        if _code(e) in ("403", "AccessDenied"):
            raise StoreError(f"bucket {bucket!r} exists but these credentials cannot access it "
                             f"(someone else's bucket, or a policy without s3:ListBucket)") from e
        raise _store_error(e, f"check bucket {bucket!r}", bucket) from e


def _store_error(exc: BaseException, what: str, bucket: str) -> StoreError:
    from launcher.store.s3 import map_error

    return map_error(exc, what, bucket, f"s3://{bucket}")


def _classify(setting: Setting, live: Any) -> str:
    if setting.matches(live, setting.declared):
        return "ok"
    return "create" if live in (None, {}, []) else "change"


def plan(client: Any, bucket: str, decl: BucketDeclaration) -> Plan:
    """Read the live bucket and compare every managed setting with the declaration."""
    exists = bucket_exists(client, bucket)
    result = Plan(bucket, exists, [Change("bucket", "ok" if exists else "create",
                                          "exists" if exists else None, "exists")])
    for s in settings_for(decl):
        if not exists:
            result.changes.append(Change(s.name, "create", None, s.declared))
            continue
        try:
            live = s.read(client, bucket)
        except Exception as e:
            if _unsupported(e):
                result.changes.append(Change(s.name, "unsupported", None, s.declared, UNSUPPORTED))
                continue
            raise _store_error(e, f"read {s.name} of bucket {bucket!r}", bucket) from e
        result.changes.append(Change(s.name, _classify(s, live), live, s.declared))
    return result


def _create_bucket(client: Any, bucket: str, decl: BucketDeclaration) -> None:
    region = decl.region
    if region is None and "amazonaws.com" in (client.meta.endpoint_url or ""):
        region = client.meta.region_name
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    client.create_bucket(**kwargs)


def apply(client: Any, bucket: str, decl: BucketDeclaration, the_plan: Plan) -> list[Result]:
    """Apply the plan's pending changes in order (the bucket first); each is read back, and one
    the endpoint accepts but does not keep is reported as unsupported. A failed setting is
    reported and the rest still applied; a failure to create the bucket raises."""
    results = []
    by_name = {s.name: s for s in settings_for(decl)}
    for change in the_plan.pending:
        verb = "created" if change.action == "create" else "changed"
        if change.setting == "bucket":
            try:
                _create_bucket(client, bucket, decl)
            except Exception as e:
                raise _store_error(e, f"create bucket {bucket!r}", bucket) from e
            results.append(Result("bucket", verb))
            continue
        setting = by_name[change.setting]
        try:
            setting.apply(client, bucket, change.live)
            live = setting.read(client, bucket)
        except Exception as e:
            if _unsupported(e):
                results.append(Result(setting.name, "unsupported", UNSUPPORTED))
            else:
                err = _store_error(e, f"set {setting.name}", bucket)
                results.append(Result(setting.name, "failed", str(err)))
            continue
        if setting.matches(live, setting.declared):
            results.append(Result(setting.name, verb))
        else:
            results.append(Result(setting.name, "unsupported",
                                  f"{UNSUPPORTED}: accepted, but reads back {live!r}"))
    return results


def make_client(decl: BucketDeclaration | None = None) -> Any:
    """An S3 client for infrastructure calls (same configuration as the store's)."""
    from launcher.store.s3 import make_client as _make

    return _make(region=decl.region if decl else None)
