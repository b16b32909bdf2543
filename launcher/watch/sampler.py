"""Machine samples, taken by the agent on the machine: every GPU through nvidia-ml-py
(utilisation, memory used/total, temperature, power) and the run's CPU and RAM.

One JSON object per line in ``gpu.jsonl`` (``contract.SAMPLES_NAME``), next to ``metrics.jsonl``
in the job's store folder, e.g.::

    {"ts": 1700000000.0, "attempt": 2, "cpu_percent": 98.0, "rss_mb": 812.3, "ram_percent": 41.0,
     "gpus": [{"index": 0, "name": "NVIDIA A100", "util": 97, "mem_used_mb": 30000.0,
               "mem_total_mb": 40960.0, "temp_c": 71, "power_w": 301.2}]}

Without NVML (no driver, no nvidia-ml-py) ``gpus`` is empty and the agent says so once. The run's
CPU and RAM come from psutil where it is installed, else the machine's load and memory from /proc;
a process's first CPU reading is left out (psutil needs an interval).
"""

from __future__ import annotations

import os
import time
from typing import Any

MB = 1024 * 1024


def load_nvml() -> tuple[Any | None, str]:
    """nvidia-ml-py's module, initialised, or None and why not."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None, "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"NVML cannot start ({e})"
    return pynvml, ""


def gpu_samples(nvml: Any) -> list[dict[str, Any]]:
    """One record per GPU that NVML sees; a reading that a GPU does not support is left out."""
    out = []
    for i in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        name = nvml.nvmlDeviceGetName(h)
        rec: dict[str, Any] = {"index": i, "name": name.decode() if isinstance(name, bytes) else str(name)}
        for key, read in (("util", lambda: nvml.nvmlDeviceGetUtilizationRates(h).gpu),
                          ("temp_c", lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
                          ("power_w", lambda: round(nvml.nvmlDeviceGetPowerUsage(h) / 1000.0, 1))):
            try:
                rec[key] = read()
            except Exception:
                pass
        try:
            mem = nvml.nvmlDeviceGetMemoryInfo(h)
            rec["mem_used_mb"] = round(mem.used / MB, 1)
            rec["mem_total_mb"] = round(mem.total / MB, 1)
        except Exception:
            pass
        out.append(rec)
    return out


class ProcessSampler:
    """CPU percent and resident memory of a process group's processes (the run), with psutil
    when it is there, else the machine's load and memory from /proc."""

    def __init__(self):
        try:
            import psutil
        except ImportError:
            psutil = None
        self.psutil = psutil
        self._procs: dict[int, Any] = {}

    def sample(self, pgid: int | None) -> dict[str, Any]:
        if self.psutil is None:
            return _proc_fallback()
        ps = self.psutil
        cpu, rss, known = 0.0, 0, 0
        seen = set()
        for p in ps.process_iter(["pid"]):
            try:
                if pgid is None or os.getpgid(p.pid) != pgid:
                    continue
                known += p.pid in self._procs
                proc = self._procs.setdefault(p.pid, p)  # cpu_percent counts from the last call
                seen.add(p.pid)
                cpu += proc.cpu_percent(None)  # 0.0 at a process's first call: no interval yet
                rss += proc.memory_info().rss
            except (ps.Error, OSError):
                continue
        self._procs = {k: v for k, v in self._procs.items() if k in seen}
        out = {"rss_mb": round(rss / MB, 1), "ram_percent": ps.virtual_memory().percent}
        if known:
            out["cpu_percent"] = round(cpu, 1)
        return out


def _proc_fallback() -> dict[str, Any]:
    out: dict[str, Any] = {"load1": os.getloadavg()[0]}
    try:
        info = dict(line.split(":", 1) for line in open("/proc/meminfo"))
        total = int(info["MemTotal"].split()[0])
        avail = int(info["MemAvailable"].split()[0])
        out["ram_percent"] = round(100.0 * (total - avail) / total, 1)
    except (OSError, KeyError, ValueError):
        pass
    return out


class Sampler:
    """Takes one sample of the machine at a time. ``nvml`` is nvidia-ml-py's module (tests pass a
    fake one); by default it is loaded here, and when it cannot be, ``no_gpu_reason`` says why."""

    def __init__(self, attempt: int, nvml: Any | None = None, load=load_nvml):
        self.attempt = attempt
        self.no_gpu_reason = ""
        if nvml is None:
            nvml, self.no_gpu_reason = load()
        self.nvml = nvml
        self.procs = ProcessSampler()

    def sample(self, pgid: int | None = None, now: float | None = None) -> dict[str, Any]:
        rec: dict[str, Any] = {"ts": round(now if now is not None else time.time(), 3), "attempt": self.attempt}
        rec.update(self.procs.sample(pgid))
        gpus: list[dict[str, Any]] = []
        if self.nvml is not None:
            try:
                gpus = gpu_samples(self.nvml)
            except Exception as e:  # the driver went away mid-run: say so in the sample
                rec["gpu_error"] = str(e)
        rec["gpus"] = gpus
        return rec

    def close(self) -> None:
        if self.nvml is not None:
            try:
                self.nvml.nvmlShutdown()
            except Exception:
                pass
