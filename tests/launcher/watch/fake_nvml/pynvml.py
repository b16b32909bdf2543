"""A stand-in for nvidia-ml-py's ``pynvml``, put first on PYTHONPATH by the tests.

The GPUs it reports come from ``FAKE_NVML`` (a JSON list of objects with name, util, mem_used,
mem_total (bytes), temp, power_mw); ``FAKE_NVML=fail`` makes ``nvmlInit`` fail like a machine
without a driver."""

import json
import os
from types import SimpleNamespace

NVML_TEMPERATURE_GPU = 0


class NVMLError(Exception):
    pass


def _gpus():
    return json.loads(os.environ.get("FAKE_NVML", "[]"))


def nvmlInit():
    if os.environ.get("FAKE_NVML") == "fail":
        raise NVMLError("NVML Shared Library Not Found")


def nvmlShutdown():
    pass


def nvmlDeviceGetCount():
    return len(_gpus())


def nvmlDeviceGetHandleByIndex(i):
    return _gpus()[i]


def nvmlDeviceGetName(h):
    return h["name"].encode()


def nvmlDeviceGetUtilizationRates(h):
    return SimpleNamespace(gpu=h["util"], memory=0)


def nvmlDeviceGetTemperature(h, sensor):
    return h["temp"]


def nvmlDeviceGetPowerUsage(h):
    if "power_mw" not in h:
        raise NVMLError("Not Supported")
    return h["power_mw"]


def nvmlDeviceGetMemoryInfo(h):
    return SimpleNamespace(used=h["mem_used"], total=h["mem_total"], free=h["mem_total"] - h["mem_used"])
