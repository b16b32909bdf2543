"""What a task would cost where: candidates from SkyPilot's optimizer and catalog (``launch plan``).

For each of the task's resources options, on each cloud SkyPilot has enabled (``sky check``), the
instance types that fit (``Cloud.get_feasible_launchable_resources``, the optimizer's own search),
in every region that offers them (``make_launchables_for_valid_region_zones``), priced on demand
and spot from the catalog. Runs in this process, without SkyPilot's API server; with catalogs
already on disk it needs no network (a catalog edited by hand is never re-fetched).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from launcher.errors import InfraError
from launcher.task import LOCAL_INFRAS, Task


# Machines SkyPilot does not rent: no catalog price, and asking their feasibility means a round
# trip to the cluster.
UNPRICED_CLOUDS = ("slurm", "kubernetes", "ssh")


@dataclass(frozen=True)
class Candidate:
    cloud: str
    region: str
    instance_type: str
    accelerators: str  # "V100:1", "" for none
    spot: bool
    price_per_hour: float  # per node
    est_cost: float  # for the expected hours, all nodes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _accelerators(acc: dict[str, Any] | None) -> str:
    if not acc:
        return ""
    return ",".join(f"{k}:{int(v) if float(v).is_integer() else v}" for k, v in acc.items())


def _sky_options(task: Task, infra: str | None) -> list[Any]:
    """The task's options as ``sky.Resources`` (spot left open: both prices are wanted)."""
    import sky

    out = []
    for opt in task.resources.options():
        opt = {k: v for k, v in opt.items() if k not in ("use_spot", "job_recovery")}
        pin = infra or opt.get("infra")
        if pin and pin.split("/", 1)[0].lower() not in (*LOCAL_INFRAS, "skypilot", "sky"):
            opt["infra"] = pin
        else:
            opt.pop("infra", None)
        try:
            out.extend(sky.Resources.from_yaml_config(opt))
        except ValueError as e:
            raise InfraError(f"resources {opt}: {' '.join(str(e).split())}") from None
    return out


def _enabled_clouds() -> list[Any]:
    from sky import check, exceptions
    from sky.clouds import cloud as sky_cloud

    try:
        return check.get_cached_enabled_clouds_or_refresh(sky_cloud.CloudCapability.COMPUTE,
                                                          raise_if_no_cloud_access=True)
    except exceptions.NoCloudAccessError:
        raise InfraError("SkyPilot has no cloud enabled: set up credentials, then run `sky check`") from None


def _priced(resources: Any, cloud: Any, num_nodes: int, spot: bool) -> list[tuple[Any, float]]:
    """``(launchable, $/h)`` per region (and per zone for spot) for one option on one cloud."""
    from sky import clouds, exceptions
    from sky.utils import resources_utils

    r = resources.copy(use_spot=spot)
    if spot:
        try:
            cloud.check_features_are_supported(r, {clouds.CloudImplementationFeatures.SPOT_INSTANCE})
        except exceptions.NotSupportedError:
            return []
    feasible = cloud.get_feasible_launchable_resources(r, num_nodes)
    out = []
    for fr in feasible.resources_list:
        for launchable in resources_utils.make_launchables_for_valid_region_zones(fr):
            out.append((launchable, launchable.get_cost(3600)))
    return out


def hourly_price(option: dict[str, Any], cloud: str, region: str | None, spot: bool) -> float | None:
    """$/h of one node of ``option`` where SkyPilot put it (``cloud``, ``region``): the cheapest
    instance type that fits there, as SkyPilot's optimizer picks it. None when the catalog has no
    price (Slurm, Kubernetes, an unknown cloud) or cannot be read."""
    if cloud.lower() in UNPRICED_CLOUDS:
        return None
    import sky
    from sky import clouds as sky_clouds

    try:
        opt = {k: v for k, v in option.items() if k not in ("use_spot", "job_recovery", "any_of", "ordered")}
        opt["infra"] = f"{cloud}/{region}" if region and region != "-" else cloud
        prices = []
        for resources in sky.Resources.from_yaml_config(opt):
            c = resources.cloud or sky_clouds.CLOUD_REGISTRY.from_str(cloud)
            prices += [p for launchable, p in _priced(resources, c, 1, spot)
                       if not region or launchable.region == region]
        return round(min(prices), 4) if prices and min(prices) > 0 else None
    except Exception:  # a price is nice to have: never fail the attempt over it
        return None


def candidates(task: Task, hours: float = 1.0, *, infra: str | None = None,
               all_regions: bool = False) -> list[Candidate]:
    """Every (cloud, instance type, spot) that fits one of the task's options, at its cheapest
    region (or in every region), cheapest first."""
    from sky import clouds as sky_clouds

    options = _sky_options(task, infra)
    enabled = _enabled_clouds()
    best: dict[tuple, Candidate] = {}
    for resources in options:
        resources.validate()
        if resources.cloud is not None and not sky_clouds.cloud_in_iterable(resources.cloud, enabled):
            continue
        for cloud in [resources.cloud] if resources.cloud is not None else enabled:
            for spot in (False, True):
                for launchable, price in _priced(resources, cloud, task.num_nodes, spot):
                    c = Candidate(cloud=str(cloud), region=launchable.region or "",
                                  instance_type=launchable.instance_type or "",
                                  accelerators=_accelerators(launchable.accelerators), spot=spot,
                                  price_per_hour=round(price, 4),
                                  est_cost=round(price * hours * task.num_nodes, 4))
                    key = (c.cloud, c.instance_type, c.spot) + ((c.region,) if all_regions else ())
                    if key not in best or c.price_per_hour < best[key].price_per_hour:
                        best[key] = c
    if not best:
        wanted = " or ".join(str(o.get("accelerators") or o.get("instance_type") or "a CPU machine")
                             for o in task.resources.options())
        names = ", ".join(str(c) for c in enabled)
        raise InfraError(f"no instance in SkyPilot's catalog fits {wanted} on the enabled clouds "
                         f"({names}); see `sky gpus list`")
    return sorted(best.values(), key=lambda c: (c.price_per_hour, c.cloud, c.region, c.instance_type))
