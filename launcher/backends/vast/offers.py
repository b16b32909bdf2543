"""From a task's ``resources`` to a Vast.ai offer query, and from offers to the one to rent.

The query is the ``vastai search offers`` language (``gpu_name in [Tesla_V100] num_gpus=2 ...``);
the SDK parses it (underscores become spaces, as Vast's names have them). Names are SkyPilot's
accelerator names (``V100``, ``A6000``, ``A100-80GB``, ``RTX4090``); a name not in the table is
passed on as written, so Vast's own spellings (``RTX_A6000``) work too.

``use_spot`` rents interruptible: the search asks for bid offers, and the bid is the offer's
minimum bid times ``bid_factor`` (never above the price cap). Offers come back cheapest first.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from launcher.backends.vast.config import VastSettings
from launcher.errors import InfraError

# SkyPilot accelerator name (normalised: upper case, no spaces, '_' or '-') -> Vast gpu_name
# values, and the least GPU memory in GB where the name implies it.
GPU_NAMES: dict[str, tuple[tuple[str, ...], int]] = {
    "K80": (("Tesla_K80",), 0),
    "P100": (("Tesla_P100",), 0),
    "P40": (("Tesla_P40",), 0),
    "P4": (("Tesla_P4",), 0),
    "T4": (("Tesla_T4",), 0),
    "V100": (("Tesla_V100",), 0),
    "V10032GB": (("Tesla_V100",), 30),
    "A100": (("A100_SXM4", "A100_PCIE"), 0),
    "A10040GB": (("A100_SXM4", "A100_PCIE"), 0),
    "A10080GB": (("A100_SXM4", "A100_PCIE"), 70),
    "A100SXM4": (("A100_SXM4",), 0),
    "A100PCIE": (("A100_PCIE",), 0),
    "H100": (("H100_SXM", "H100_PCIE", "H100_NVL"), 0),
    "H100SXM": (("H100_SXM",), 0),
    "H100PCIE": (("H100_PCIE",), 0),
    "H100NVL": (("H100_NVL",), 0),
    "H200": (("H200", "H200_NVL"), 0),
    "GH200": (("GH200_SXM",), 0),
    "B200": (("B200",), 0),
    "A10": (("A10",), 0),
    "A40": (("A40",), 0),
    "L4": (("L4",), 0),
    "L40": (("L40",), 0),
    "L40S": (("L40S",), 0),
    "A4000": (("RTX_A4000",), 0),
    "A5000": (("RTX_A5000",), 0),
    "A6000": (("RTX_A6000",), 0),
    "RTXA4000": (("RTX_A4000",), 0),
    "RTXA5000": (("RTX_A5000",), 0),
    "RTXA6000": (("RTX_A6000",), 0),
    "RTX6000ADA": (("RTX_6000Ada",), 0),
    "RTX3080": (("RTX_3080",), 0),
    "RTX3090": (("RTX_3090",), 0),
    "RTX4080": (("RTX_4080",), 0),
    "RTX4090": (("RTX_4090",), 0),
    "RTX5090": (("RTX_5090",), 0),
}


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name.upper())


def vast_gpu_names(name: str) -> tuple[list[str], int]:
    """``"V100" -> (["Tesla_V100"], 0)``, ``"A100-80GB" -> (["A100_SXM4", "A100_PCIE"], 70)``;
    an unknown name is taken as Vast's own spelling (spaces become ``_``)."""
    hit = GPU_NAMES.get(_norm(name))
    if hit:
        return list(hit[0]), hit[1]
    return [re.sub(r"\s+", "_", name.strip())], 0


def accelerators(resources: dict[str, Any]) -> tuple[list[str], int]:
    """The accelerator names (alternatives) and the GPU count: ``"V100:2" -> (["V100"], 2)``,
    ``{"A100": 8}``, ``["V100", "A6000"]`` (any of them, one each); none -> ``([], 0)``."""
    acc = resources.get("accelerators")
    if not acc:
        return [], 0
    if isinstance(acc, str):
        name, _, count = acc.partition(":")
        return [name.strip()], math.ceil(float(count)) if count else 1
    if isinstance(acc, dict):
        counts = {math.ceil(float(c)) if c else 1 for c in acc.values()}
        return [str(k) for k in acc], max(counts)
    pairs = [accelerators({"accelerators": a}) for a in acc]
    return [n for names, _ in pairs for n in names], max(c for _, c in pairs)


def size_gb(value: int | float | str | None, default: float) -> float:
    """``100 -> 100``, ``"256GB" -> 256``, ``"1TB" -> 1024``, ``"16+" -> 16``, none -> default."""
    if value is None or value == "":
        return default
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtTpP])?[bBiI]?\s*\+?\s*", str(value))
    if not m:
        raise InfraError(f"cannot read {value!r} as a size in GB")
    scale = {"K": 1 / 1024 ** 2, "M": 1 / 1024, "G": 1, "T": 1024, "P": 1024 ** 2}[(m.group(2) or "G").upper()]
    return float(m.group(1)) * scale


def _number(value: Any) -> float | None:
    """``"2+" -> 2``, ``4 -> 4``, none -> None (SkyPilot's cpus/memory)."""
    if value is None:
        return None
    m = re.match(r"\s*([0-9.]+)", str(value))
    return float(m.group(1)) if m else None


@dataclass(frozen=True)
class OfferQuery:
    """One search: the query string, the offer type and the sort order."""

    query: str
    spot: bool
    disk_gb: float

    @property
    def offer_type(self) -> str:
        return "bid" if self.spot else "on-demand"

    @property
    def order(self) -> str:
        return "min_bid" if self.spot else "dph_total"


def build_query(resources: dict[str, Any], settings: VastSettings, *, spot: bool | None = None) -> OfferQuery:
    """The search for one resources option. ``spot`` overrides ``use_spot`` (the on-demand
    fallback after too many outbids)."""
    spot = bool(resources.get("use_spot")) if spot is None else spot
    names, count = accelerators(resources)
    disk = size_gb(resources.get("disk_size"), settings.disk_gb)
    terms = []
    if names:
        vast, min_ram = [], 0
        for n in names:
            v, ram = vast_gpu_names(n)
            vast += [x for x in v if x not in vast]
            min_ram = max(min_ram, ram)
        terms.append(f"gpu_name in [{','.join(vast)}]")
        terms.append(f"num_gpus={count}")
        if min_ram:
            terms.append(f"gpu_ram>={min_ram}")
    terms.append(f"disk_space>={disk:g}")
    terms.append(f"reliability>={settings.min_reliability:g}")
    if settings.min_inet_down > 0:  # a slow link makes the image pull (the boot) take many minutes
        terms.append(f"inet_down>={settings.min_inet_down:g}")
    if (cpus := _number(resources.get("cpus"))) is not None:
        terms.append(f"cpu_cores_effective>={cpus:g}")
    if (mem := _number(resources.get("memory"))) is not None:
        terms.append(f"cpu_ram>={mem:g}")
    if settings.max_price is not None:
        terms.append(f"{'min_bid' if spot else 'dph_total'}<={settings.max_price:g}")
    return OfferQuery(" ".join(terms), spot, disk)


def bid_price(offer: dict[str, Any], settings: VastSettings) -> float | None:
    """What to bid for an interruptible offer: its minimum bid x ``bid_factor``, capped at
    ``max_price``; None when even the minimum bid is above the cap."""
    min_bid = float(offer.get("min_bid") or 0.0)
    price = min_bid * settings.bid_factor
    if settings.max_price is not None:
        if min_bid > settings.max_price:
            return None
        price = min(price, settings.max_price)
    return round(price, 6)


def price_of(offer: dict[str, Any], q: OfferQuery, settings: VastSettings) -> float | None:
    """$/h we would pay for ``offer`` under ``q``; None when it is not acceptable (over the
    cap, below the reliability floor)."""
    reliability = offer.get("reliability", offer.get("reliability2"))
    if reliability is not None and float(reliability) < settings.min_reliability:
        return None
    inet_down = offer.get("inet_down")
    if inet_down is not None and float(inet_down) < settings.min_inet_down:
        return None
    if q.spot:
        return bid_price(offer, settings)
    price = float(offer.get("dph_total") or 0.0)
    if settings.max_price is not None and price > settings.max_price:
        return None
    return price


def rank(offers: list[dict[str, Any]], q: OfferQuery, settings: VastSettings,
         avoid: set[int] | frozenset[int] = frozenset()) -> list[tuple[float, dict]]:
    """The acceptable offers with their price, cheapest first (then the most reliable); offers
    on a machine in ``avoid`` (one that did not boot for this job) are left out."""
    priced = [(p, o) for o in offers if o.get("machine_id") not in avoid
              and (p := price_of(o, q, settings)) is not None]
    return sorted(priced, key=lambda po: (po[0], -float(po[1].get("reliability") or 0), po[1].get("id", 0)))


def offer_summary(offer: dict[str, Any]) -> dict[str, Any]:
    """The fields of an offer that the ledger keeps."""
    keys = ("id", "machine_id", "gpu_name", "num_gpus", "dph_total", "min_bid", "reliability",
            "inet_down", "geolocation")
    return {k: offer.get(k) for k in keys if offer.get(k) is not None}


def image_for(resources: dict[str, Any], settings: VastSettings) -> str:
    """The task's ``image_id: docker:IMAGE`` when it names one, else the configured image."""
    image = str(resources.get("image_id") or "")
    if image.startswith("docker:"):
        return image[len("docker:"):]
    return settings.image
