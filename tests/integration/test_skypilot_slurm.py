"""The SkyPilot backend for real: a one-node Slurm cluster on this machine, reached by SkyPilot
over a test sshd, and `launch up --infra slurm/<cluster>` running the quickstart trainer.

* A plain cluster job runs to SUCCEEDED; `launch logs` shows the trainer's output.
* A managed job (declared ``job_recovery``) loses its Slurm allocation to ``scancel`` mid-run;
  SkyPilot relaunches it by itself (our supervisor sees one RUNNING attempt throughout) and the
  trainer resumes from the store (a ``file://`` store, shared by the "nodes" of this machine).
* ``launch down`` on a running managed job cancels it in SkyPilot and frees the Slurm allocation.

What the fixture sets up, all under a temporary folder and on free ports: munged, slurmctld and
slurmd (Debian's ``slurm-wlm``/``munge``, run in the foreground, not as services), an sshd for
root that sets ``SLURM_CONF``, a client HOME for SkyPilot (``~/.slurm/config``, ``~/.sky/config.yaml``
with the cluster's workdir and the jobs controller in consolidation mode) and its own API server
port. Facts of this machine it works around:

* SkyPilot's remote steps run in login shells whose PATH ``/etc/profile`` resets: a
  ``~root/.bash_profile`` (restored afterwards) adds a folder holding ``python3.10`` (SkyPilot's
  runtime wants it) and a ``curl`` shim that serves uv's installer from a local ``uv`` binary.
* Its Slurm set-up writes into ``~root`` (``.ssh``, ``.sky_ssh_rc``, ``.bashrc``): all restored.
* Root's login shells run ``pyenv rehash``; the sshd sets ``PYENV_REHASH_TIMEOUT=1`` and a stale
  rehash lock is removed first, so a lock left by a killed shell cannot stall every ssh command.
* Offline, its jobs controller skips every status check, as its network probe (HTTPS to
  8.8.8.8/1.1.1.1) fails here: a ``sitecustomize`` on the API server's PYTHONPATH points the
  probe at a local HTTP server.

Afterwards: the API server is stopped; its helpers and ssh ControlMasters are ended by pid; the
Slurm daemons, sshd and munged are stopped.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import socket

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLUSTER = "launchtest"
ROOT_FILES = (".bashrc", ".bash_profile", ".sky_ssh_rc", ".ssh")
NEEDED = ("munged", "slurmctld", "slurmd", "sbatch", "scancel", "sshd", "rsync", "ssh-keygen")
SITECUSTOMIZE = '''
import importlib.abc, importlib.util, os, sys
_URL = os.environ.get("LAUNCH_TEST_NETWORK_PROBE")
class _Probe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "sky.backends.backend_utils":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module._TEST_IP_LIST = [_URL]
        spec.loader.exec_module = exec_module
        return spec
if _URL:
    sys.meta_path.insert(0, _Probe())
'''


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _need() -> None:
    missing = [b for b in NEEDED if not shutil.which(b) and not os.path.exists(f"/usr/sbin/{b}")]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install slurm-wlm munge rsync openssh-server "
                    "(scripts/install-system-deps.sh)")
    if os.geteuid() != 0:
        pytest.fail("the Slurm test runs slurmd and SkyPilot's node set-up as root")


def _python310() -> str:
    found = [p for p in [shutil.which("python3.10")] + sorted(glob.glob(os.path.expanduser(
        "~/.pyenv/versions/3.10*/bin/python3.10"))) if p]
    for p in found:
        if subprocess.run([p, "-c", "import sys; assert sys.version_info[:2] == (3, 10)"],
                          capture_output=True).returncode == 0:
            return p
    pytest.fail("SkyPilot's runtime needs a Python 3.10 (e.g. pyenv install 3.10)")


def _uv(dest: Path) -> Path:
    """A uv binary: the one on PATH, else from its wheel (the package registry)."""
    if shutil.which("uv"):
        return Path(shutil.which("uv"))
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "-d", str(dest), "uv"], check=True, timeout=300)
    (wheel,) = dest.glob("uv-*.whl")
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".data/scripts/uv"))
        (dest / "uv").write_bytes(z.read(name))
    (dest / "uv").chmod(0o755)
    return dest / "uv"


class RootHome:
    """Snapshot of the files SkyPilot's Slurm set-up writes into ~root; ``restore`` puts them back."""

    def __init__(self) -> None:
        self.home = Path(os.path.expanduser("~root"))
        self.saved: dict[str, dict[str, bytes] | bytes | None] = {}
        for name in ROOT_FILES:
            p = self.home / name
            if p.is_dir():
                self.saved[name] = {f.name: f.read_bytes() for f in p.iterdir() if f.is_file()}
            else:
                self.saved[name] = p.read_bytes() if p.exists() else None

    def restore(self) -> None:
        for name, data in self.saved.items():
            p = self.home / name
            if isinstance(data, dict):
                for f in p.iterdir() if p.is_dir() else []:
                    if f.name not in data:
                        f.unlink()
                for fname, content in data.items():
                    (p / fname).write_bytes(content)
            elif data is None:
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            else:
                p.write_bytes(data)


class SlurmLab:
    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"  # SkyPilot's client HOME
        self.procs: list[subprocess.Popen] = []
        self.started = time.time()
        self.ports = dict(zip(("ctld", "slurmd", "ssh", "probe", "api"), free_ports(5)))
        self.conf = root / "slurm" / "slurm.conf"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SKY", "AWS_", "LAUNCH_"))}
        self.env.update(HOME=str(self.home), LAUNCH_HOME=str(root / "launch-home"),
                        SLURM_CONF=str(self.conf), PYTHONPATH=str(root / "site"),
                        LAUNCH_TEST_NETWORK_PROBE=f"http://127.0.0.1:{self.ports['probe']}/",
                        SKYPILOT_API_SERVER_LOCAL_PORT=str(self.ports["api"]),
                        SKYPILOT_DISABLE_USAGE_COLLECTION="1")

    def start(self, python310: str, uv: Path) -> None:
        r = self.root
        for d in ("munge", "slurm/state", "slurm/spool", "log", "bin", "site", "node", "home/.slurm",
                  "home/.sky", "launch-home", "sshd"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o700)
        (r / "munge/munge.key").write_bytes(os.urandom(1024))
        (r / "munge/munge.key").chmod(0o400)
        self._spawn(["/usr/sbin/munged", "--foreground", "--force", f"--key-file={r}/munge/munge.key",
                     f"--socket={r}/munge/munge.sock", f"--log-file={r}/log/munged.log",
                     f"--seed-file={r}/munge/seed", f"--pid-file={r}/munge/munged.pid"], "munged")
        self._wait(lambda: (r / "munge/munge.sock").exists(), 30, "munged")
        self.conf.write_text(self._slurm_conf())
        self._spawn(["/usr/sbin/slurmctld", "-D", "-f", str(self.conf)], "slurmctld")
        self._spawn(["/usr/sbin/slurmd", "-D", "-f", str(self.conf)], "slurmd")
        self._wait(lambda: "idle" in self.run(["sinfo", "-h", "-o", "%T"]).stdout, 60, "slurm")
        self._sshd()
        self._node_shell(python310, uv)
        (r / "site/sitecustomize.py").write_text(SITECUSTOMIZE)
        self._spawn([sys.executable, "-m", "http.server", str(self.ports["probe"]), "--bind", "127.0.0.1",
                     "--directory", str(r / "site")], "probe")
        (self.home / ".slurm/config").write_text(textwrap.dedent(f"""\
            Host {CLUSTER}
              HostName 127.0.0.1
              Port {self.ports['ssh']}
              User root
              IdentityFile {self.home}/id_slurm
              StrictHostKeyChecking no
              UserKnownHostsFile /dev/null
            """))
        (self.home / ".sky/config.yaml").write_text(json.dumps({
            "slurm": {"cluster_configs": {CLUSTER: {"workdir": str(r / "node")}}},
            "jobs": {"controller": {"consolidation_mode": True}}}))

    def _slurm_conf(self) -> str:
        r, host = self.root, os.uname().nodename
        return textwrap.dedent(f"""\
            ClusterName={CLUSTER}
            SlurmctldHost={host}(127.0.0.1)
            SlurmctldPort={self.ports['ctld']}
            SlurmdPort={self.ports['slurmd']}
            AuthType=auth/munge
            CredType=cred/munge
            AuthInfo=socket={r}/munge/munge.sock
            SlurmUser=root
            StateSaveLocation={r}/slurm/state
            SlurmdSpoolDir={r}/slurm/spool
            SlurmctldPidFile={r}/slurm/slurmctld.pid
            SlurmdPidFile={r}/slurm/slurmd.pid
            SlurmctldLogFile={r}/log/slurmctld.log
            SlurmdLogFile={r}/log/slurmd.log
            ProctrackType=proctrack/linuxproc
            TaskPlugin=task/none
            JobAcctGatherType=jobacct_gather/none
            SelectType=select/cons_tres
            SelectTypeParameters=CR_Core
            MpiDefault=none
            ReturnToService=2
            NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=4000 State=UNKNOWN
            PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
            """)

    def _sshd(self) -> None:
        d = self.root / "sshd"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.home / "id_slurm")], check=True)
        shutil.copy(self.home / "id_slurm.pub", d / "authorized_keys")
        (d / "sshd_config").write_text(textwrap.dedent(f"""\
            Port {self.ports['ssh']}
            ListenAddress 127.0.0.1
            HostKey {d}/host_key
            PidFile {d}/sshd.pid
            AuthorizedKeysFile {d}/authorized_keys
            PermitRootLogin yes
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            UsePAM no
            StrictModes no
            Subsystem sftp /usr/lib/openssh/sftp-server
            SetEnv SLURM_CONF={self.conf} SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PYENV_REHASH_TIMEOUT=1
            """))
        Path("/run/sshd").mkdir(exist_ok=True)
        self._spawn(["/usr/sbin/sshd", "-D", "-f", str(d / "sshd_config"), "-E", str(self.root / "log/sshd.log")],
                    "sshd")

    def _node_shell(self, python310: str, uv: Path) -> None:
        """What root's login shells on the "node" need: python3.10, uv's installer, SLURM_CONF."""
        b = self.root / "bin"
        shutil.copy(uv, b / "uv.real")
        (b / "python3.10").symlink_to(python310)
        (b / "curl").write_text(textwrap.dedent(f"""\
            #!/bin/sh
            # Test shim: uv's installer, offline; anything else goes to the real curl.
            case "$*" in *astral.sh/uv/install.sh*)
              echo 'mkdir -p "$UV_INSTALL_DIR" && cp {b}/uv.real "$UV_INSTALL_DIR/uv"'; exit 0;; esac
            exec /usr/bin/curl "$@"
            """))
        (b / "curl").chmod(0o755)
        profile = self.root / "profile.sh"
        profile.write_text(f'export PATH="{b}:$PATH" SLURM_CONF={self.conf} '
                           "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\n")
        bash_profile = Path(os.path.expanduser("~root/.bash_profile"))
        before = bash_profile.read_text() if bash_profile.exists() else "[ -f ~/.profile ] && . ~/.profile\n"
        bash_profile.write_text(before + f"\n# launch's Slurm test (removed after it)\n[ -f {profile} ] && . {profile}\n")

    def _spawn(self, argv: list[str], name: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True))

    def _wait(self, ok, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not ok():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not come up in {seconds:.0f} s; logs in {self.root / 'log'}")
            time.sleep(0.5)

    def run(self, argv: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env, cwd=self.root, capture_output=True, text=True,
                              timeout=timeout, **kw)

    def launch(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return self.run([sys.executable, "-m", "launcher.cli", *args], timeout=timeout)

    def stop(self) -> None:
        """Stop the API server and the Slurm jobs, end by pid whatever they leave (helpers, ssh
        ControlMasters, job steps: every process with our HOME or SLURM_CONF), then the daemons."""
        self.run([str(Path(sys.executable).parent / "sky"), "api", "stop"], timeout=120)
        self.run(["scancel", "--user=root", "--full"], timeout=30)
        deadline = time.monotonic() + 60
        while self.run(["squeue", "-h"], timeout=30).stdout.strip() and time.monotonic() < deadline:
            time.sleep(1)
        hash_file = self.home / ".sky/user_hash"
        user_hash = hash_file.read_text().strip() if hash_file.exists() else "-"
        marks = (f"HOME={self.home}", f"SLURM_CONF={self.conf}")
        mine = {p.pid for p in self.procs}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _pids():
                if pid not in mine and _is_ours(pid, marks, f"ssh: /tmp/sky_ssh_{user_hash}/"):
                    _kill(pid, sig)
            time.sleep(1)
        for p in reversed(self.procs):
            _kill(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                _kill(p.pid, signal.SIGKILL)
                p.wait()
        # What SkyPilot leaves in /tmp: its ControlMaster folder, the runtime folders of our
        # clusters (named after our jobs), the run scripts of our jobs on the "node" (sky_app_*,
        # never deleted by SkyPilot), the temp folders of its processes ended above (sky-tmp*),
        # empty ssh logs.
        shutil.rmtree(f"/tmp/sky_ssh_{user_hash}", ignore_errors=True)
        for run_id in self._run_ids():
            for d in glob.glob(f"/tmp/{run_id}-a*-{user_hash}"):
                shutil.rmtree(d, ignore_errors=True)
        for script in glob.glob("/tmp/sky_app_*"):
            try:
                if os.stat(script).st_mtime >= self.started and str(self.root).encode() in Path(script).read_bytes():
                    os.unlink(script)
            except OSError:
                pass
        for folder in glob.glob("/tmp/sky-tmp*"):
            try:
                if os.stat(folder).st_mtime >= self.started:
                    shutil.rmtree(folder)
            except OSError:
                pass
        for log in glob.glob("/tmp/sky_ssh_*.log"):
            st = os.stat(log)
            if st.st_size == 0 and st.st_mtime >= self.started:
                os.unlink(log)

    def attempt_handle(self, job: int, n: int) -> dict:
        import sqlite3

        with sqlite3.connect(self.root / "launch-home/state.db") as c:
            (handle,) = c.execute("SELECT handle FROM attempts WHERE job_id = ? AND n = ?", (job, n)).fetchone()
        return json.loads(handle)

    def _run_ids(self) -> list[str]:
        import sqlite3

        db = self.root / "launch-home/state.db"
        if not db.exists():
            return []
        with sqlite3.connect(db) as c:
            return [r[0] for r in c.execute("SELECT run_id FROM jobs")]


def clear_stale_pyenv_lock(older_than: float = 60.0) -> None:
    """Root's login shells run ``pyenv rehash`` (from ~/.bashrc). A shell killed mid-rehash (an
    earlier test that made a host vanish) leaves its lock, and every later login waits for it:
    60 s per SkyPilot ssh command. A rehash takes well under a second, so an old lock is stale."""
    lock = Path(os.environ.get("PYENV_ROOT", os.path.expanduser("~root/.pyenv"))) / "shims/.pyenv-shim"
    try:
        if time.time() - lock.stat().st_mtime > older_than:
            lock.unlink()
    except FileNotFoundError:
        pass


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]


def _is_ours(pid: int, env_entries: tuple[str, ...], cmd_prefix: str) -> bool:
    """Started for our lab. A login shell's ``pyenv rehash`` is spared: killed, it would leave its
    lock behind and every later root login shell would wait on it."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        if cmd.startswith(cmd_prefix):
            return True
        if "pyenv" in cmd:
            return False
        env = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:
        return False
    return any(e.encode() in env for e in env_entries)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    _need()
    clear_stale_pyenv_lock()
    root = tmp_path_factory.mktemp("slurm")
    python310, uv = _python310(), _uv(root / "uvdl")
    saved = RootHome()
    lab = SlurmLab(root)
    try:
        lab.start(python310, uv)
        yield lab
    finally:
        try:
            lab.stop()
        finally:
            saved.restore()


def quickstart_task(lab: SlurmLab, name: str, managed: bool) -> Path:
    """The quickstart trainer, with this project's Python (the node is this machine)."""
    recovery = "  job_recovery:\n    max_restarts_on_errors: 0\n" if managed else ""
    path = lab.root / f"{name}.yaml"
    path.write_text(f"name: {name}\nresources:\n  cpus: 1+\n{recovery}workdir: {REPO}\n"
                    f"envs:\n  EPOCHS: \"2\"\n  SEED: \"0\"\n"
                    f"run: |\n  {sys.executable} -m trainers.quickstart --epochs \"$EPOCHS\" --seed \"$SEED\"\n")
    return path


def submit_managed(lab: SlurmLab, name: str, epochs: int) -> tuple[Path, str, Path]:
    """``launch up -d`` of a managed quickstart job, once it has a checkpoint in the store:
    ``(task file, job id, the job's store prefix)``."""
    task = quickstart_task(lab, name, managed=True)
    up = lab.launch("up", str(task), "--infra", f"slurm/{CLUSTER}", "--env", f"EPOCHS={epochs}", "-d", timeout=300)
    assert up.returncode == 0, up.stderr
    job = up.stderr.split("Job ", 1)[1].split()[0]
    prefix = Path(job_doc(lab, job)["store"][len("file://"):])
    deadline = time.monotonic() + 600
    while not list((prefix / "ckpt").glob("step-*")):
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(2)
    return task, job, prefix


def managed_jobs(lab: SlurmLab, task: Path, field: str) -> list:
    """``field`` of SkyPilot's managed jobs made from ``task``, from its own queue."""
    code = ("import json, sky; r = sky.get(sky.jobs.queue_v2(refresh=False))[0]; print(json.dumps("
            f"[[x['job_name'], getattr(x[{field!r}], 'value', x[{field!r}])] for x in r]))")
    queue = lab.run([sys.executable, "-c", code], timeout=300)
    rows = json.loads(queue.stdout.strip().splitlines()[-1])
    return [value for name, value in rows if name.startswith(task.stem)]


def job_doc(lab: SlurmLab, job: str) -> dict:
    out = lab.launch("status", job, "--json", timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


@pytest.mark.timeout(1200)
def test_quickstart_runs_to_succeeded_on_slurm_and_logs_show_it(slurm):
    up = slurm.launch("up", str(quickstart_task(slurm, "qs", managed=False)), "--infra", f"slurm/{CLUSTER}")
    assert up.returncode == 0, f"{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
    assert "[quickstart] done: 200 steps" in up.stdout
    doc = job_doc(slurm, "1")
    assert doc["state"] == "SUCCEEDED" and len(doc["attempts"]) == 1
    logs = slurm.launch("logs", "1", timeout=300)
    assert logs.returncode == 0 and "[quickstart] done: 200 steps" in logs.stdout
    prefix = Path(doc["store"][len("file://"):])
    assert (prefix / "DONE").exists() and (prefix / "logs/attempt-1.exit_code").read_text().strip() == "0"
    assert sorted(p.name for p in (prefix / "ckpt").iterdir())[-1] == "step-00000200"
    assert (prefix / "outputs/results.json").exists() and (prefix / "metrics.jsonl").exists()
    assert slurm.run(["squeue", "-h"]).stdout.strip() == ""  # the cluster was torn down
    # The attempt was located through SkyPilot's status (Slurm has no price: 0 $/h).
    assert slurm.attempt_handle(1, 1)["priced_at"][0] == "Slurm" and doc["attempts"][0]["price_per_hour"] == 0


@pytest.mark.timeout(1800)
def test_managed_job_survives_scancel_and_resumes_from_the_store(slurm):
    task, job, prefix = submit_managed(slurm, "qsm", epochs=3)  # with a checkpoint to resume from
    deadline = time.monotonic() + 600
    (slurm_job,) = slurm.run(["squeue", "-h", "-o", "%i"]).stdout.split()
    assert slurm.run(["scancel", slurm_job]).returncode == 0  # the allocation vanishes
    while (doc := job_doc(slurm, job))["state"] not in ("SUCCEEDED", "FAILED", "CANCELLED"):
        assert time.monotonic() < deadline + 600, f"job still {doc['state']}"
        time.sleep(5)
    assert doc["state"] == "SUCCEEDED", doc
    assert len(doc["attempts"]) == 1  # SkyPilot recovered it, not our supervisor
    assert doc["attempts"][0]["provider_recoveries"] == 1  # and `launch status` says so
    log = (prefix / "logs/attempt-1.log").read_text()
    assert "resumed from" in log and "[quickstart] done: 300 steps" in log, log[-2000:]
    logs = slurm.launch("logs", job, timeout=300)  # SkyPilot's log of the managed job
    assert logs.returncode == 0 and "[quickstart] done: 300 steps" in logs.stdout, logs.stdout[-2000:]
    assert managed_jobs(slurm, task, "recovery_count") == [1]  # SkyPilot's own count of recoveries


@pytest.mark.timeout(1200)
def test_launch_down_cancels_a_running_managed_job_and_frees_the_allocation(slurm):
    task, job, _ = submit_managed(slurm, "qsd", epochs=50)  # it really runs
    down = slurm.launch("down", job, timeout=300)
    assert down.returncode == 0 and "CANCELLED" in down.stderr, down.stderr
    doc = job_doc(slurm, job)
    assert doc["state"] == "CANCELLED" and doc["attempts"][-1]["state"] == "CANCELLED"
    # SkyPilot cancelled the managed job and tore its cluster down: nothing holds the node.
    deadline = time.monotonic() + 180
    while slurm.run(["squeue", "-h"]).stdout.strip():
        assert time.monotonic() < deadline, slurm.run(["squeue"]).stdout
        time.sleep(2)
    assert managed_jobs(slurm, task, "status") == ["CANCELLED"]
