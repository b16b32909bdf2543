"""No credential is written down anywhere: a job on an SSH host with S3 store keys, task secrets
and a notification URL leaves zero copies of them in the state database, any log, any file on
the host or here, any object in the store, ``launch status --json`` or any command line.

The store is moto's S3 server over HTTP with access keys made for this test (moto accepts any),
so a search for them finds nothing by accident. Notifications are not built yet: the
"notification URL" is a task secret holding an apprise-style URL (``slack://A/B/C``), which is
how notifications will be configured.

Where the values must be, the test finds them (so the search itself works): in the run's own
environment (that is what secrets are for) and in the 0600 ``secrets.json`` while the attempt
runs. The agent that starts the run reads them from that file, so its environment holds none.
"""

from __future__ import annotations

import hashlib
import os
import secrets as random
import socket
import subprocess
from pathlib import Path

import pytest

from launcher import state as st
from launcher.testing import wait_for

pytestmark = pytest.mark.integration

STEPS = 40


@pytest.fixture
def moto_store(monkeypatch):
    """A moto S3 server with this test's own keys in the environment; yields (keys, client)."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    keys = {"AWS_ACCESS_KEY_ID": "AKIALEAK" + random.token_hex(6).upper(),
            "AWS_SECRET_ACCESS_KEY": "leak-secret-" + random.token_hex(14)}
    for k, v in {**keys, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])
    client.create_bucket(Bucket="creds")
    try:
        yield keys, client
    finally:
        server.stop()


def task_file(tmp_path: Path) -> Path:
    p = tmp_path / "creds.yaml"
    p.write_text(
        "name: creds\n"
        "secrets:\n  HF_TOKEN: null\n  NOTIFY_URL: null\n"
        "run: |\n"
        "  python -c \"import hashlib, os; print('token digest', "
        "hashlib.sha256((os.environ['HF_TOKEN'] + os.environ['NOTIFY_URL']).encode()).hexdigest())\"\n"
        f"  python -m launcher.testing toy --steps {STEPS} --step-time 0.25\n")
    return p


def hits(data: bytes, needles: list[bytes]) -> list[str]:
    return [n.decode() for n in needles if n in data]


def read(path: Path | str) -> bytes:
    """The file's bytes; empty when it went away meanwhile (a running job's files come and go)."""
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def files_under(*folders: Path):
    for folder in folders:
        for f in folder.rglob("*"):
            if f.is_file() and not f.is_symlink():
                yield f


def proc_file(pid: int, name: str) -> bytes:
    return read(f"/proc/{pid}/{name}")


def leaks(needles: list[bytes], folders: list[Path], allowed: set[Path] = frozenset()) -> list[str]:
    """Every file under ``folders`` and every process's command line that holds a needle."""
    found = [f"{f}: {hits(read(f), needles)}" for f in files_under(*folders)
             if f not in allowed and hits(read(f), needles)]
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        if hits(proc_file(pid, "cmdline"), needles):
            found.append(f"command line of pid {pid}: {proc_file(pid, 'cmdline')[:200]!r}")
    return found


def test_no_credential_is_written_anywhere(ssh_lab, moto_store, launch_cli, launch_home, tmp_path, monkeypatch):
    keys, s3 = moto_store
    token = "hf_leak" + random.token_hex(12)
    parts = ["TLEAK" + random.token_hex(5), "BLEAK" + random.token_hex(5), "xoxbleak" + random.token_hex(10)]
    notify = "slack://" + "/".join(parts)
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("NOTIFY_URL", notify)
    needles = [v.encode() for v in (*keys.values(), token, notify, *parts)]
    host = ssh_lab.add_host("host-a")
    ssh_lab.write_pool("one", ["host-a"])
    # Everything a test wrote or the job can write: this machine's state and logs, the host's
    # folder (code, venv, attempts), the sshd logs and configs.
    folders = [launch_home, ssh_lab.dir]

    # A kill drill mid-run: attempt 2 gets the secrets again, and attempt 1's secrets.json must go.
    launch_cli("up", str(task_file(tmp_path)), "--infra", "ssh/one", "--store", "s3://creds/runs", "-d",
               "--chaos", "kill@7s")  # training takes 10 s
    job = st.State().jobs()[-1]
    att = host.root / "attempts" / job.run_id / "attempt-1"
    wait_for(lambda: "step 5 " in ((att / "run.log").read_text() if (att / "run.log").exists() else ""),
             120, "the run to be under way")

    # While it runs: only secrets.json (0600) holds them on disk; the run's environment has them.
    assert oct((att / "secrets.json").stat().st_mode & 0o777) == "0o600"
    assert hits((att / "secrets.json").read_bytes(), needles) == [n.decode() for n in needles]
    assert leaks(needles, folders, allowed={att / "secrets.json"}) == []
    pids = ssh_lab.job_pids(job.run_id)
    agents = [p for p in pids if b"launcher.agent" in proc_file(p, "cmdline")]
    runs = [p for p in pids if p not in agents and b"LAUNCH_JOB_ID=" in proc_file(p, "environ")]
    assert agents and runs, (pids, agents)
    assert [hits(proc_file(p, "environ"), needles) for p in agents] == [[]] * len(agents)
    assert any(token in hits(proc_file(p, "environ"), needles) for p in runs)
    assert hits(launch_cli("status", "--json").stdout.encode(), needles) == []
    # The supervisor got the task's secrets on a pipe: its environment (which /proc keeps as it
    # was at exec) holds none of them; the store keys it inherits from this shell are its own.
    home = f"LAUNCH_HOME={launch_home}\x00".encode()
    sups = [int(p) for p in os.listdir("/proc") if p.isdigit()
            and b"launcher.supervisor\x00" in proc_file(int(p), "cmdline") and home in proc_file(int(p), "environ")]
    assert sups and [hits(proc_file(p, "environ"), [token.encode(), notify.encode()]) for p in sups] == [[]]

    final = wait_for(lambda: st.State().job(job.id).terminal and st.State().job(job.id), 180, "the job to end")
    assert final.state == "SUCCEEDED", launch_cli.status(job.id)
    digest = hashlib.sha256((token + notify).encode()).hexdigest()
    logs = launch_cli("logs", str(job.id)).stdout
    assert logs.count(f"token digest {digest}") == 2  # both attempts got both secrets
    assert [a.state for a in st.State().attempts(job.id)] == ["PREEMPTED", "SUCCEEDED"]

    # After: nothing anywhere, secrets.json included; not in the store, not in what launch prints.
    assert list(host.root.rglob("secrets.json")) == []
    assert leaks(needles, folders) == []
    objects = s3.list_objects_v2(Bucket="creds").get("Contents", [])
    assert any(o["Key"].endswith("MANIFEST.json") for o in objects) and len(objects) < 1000
    stored = {o["Key"]: s3.get_object(Bucket="creds", Key=o["Key"])["Body"].read() for o in objects}
    assert {k: hits(v, needles) for k, v in stored.items() if hits(v, needles)} == {}
    printed = "".join(launch_cli(*cmd).stdout for cmd in (("status", "--json"), ("status",), ("logs", str(job.id))))
    assert hits(printed.encode(), needles) == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert hits(ps.encode(), needles) == []
