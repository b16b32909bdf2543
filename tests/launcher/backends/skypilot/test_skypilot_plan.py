"""`launch plan` offline: a small hand-made catalog under a temporary HOME (SkyPilot never
re-fetches a catalog edited by hand) and one cloud marked enabled in SkyPilot's state make its
optimizer search run with no network. One subprocess (SkyPilot reads HOME when it is imported)
runs the command for a V100 task and an A6000 task; the test checks the JSON it printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[4]
SKY_CATALOG = ".sky/catalogs/v8"  # sky.skylet.constants.CATALOG_SCHEMA_VERSION in SkyPilot 0.14
VMS = """\
InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Region,SpotPrice,Price,AvailabilityZone,GpuInfo
1x_V100_SECURE,V100,1.0,8.0,43.0,US,0.21,0.39,US-TX-3,
1x_V100_SECURE,V100,1.0,8.0,43.0,CA,0.19,0.42,CA-MTL-1,
2x_V100_SECURE,V100,2.0,16.0,86.0,US,0.42,0.78,US-TX-3,
1x_A6000_SECURE,A6000,1.0,9.0,50.0,US,0.25,0.49,US-TX-3,
1x_A6000_SECURE,A6000,1.0,9.0,50.0,CA,0.27,0.46,CA-MTL-1,
"""
# The child: mark RunPod enabled (what `sky check` records), then run the command as the CLI would.
CHILD = textwrap.dedent("""
    import json, sys
    from click.testing import CliRunner
    from sky import check, global_user_state, skypilot_config
    from sky.clouds import cloud as sky_cloud
    from launcher.commands.plan import plan

    ws = skypilot_config.get_active_workspace()
    global_user_state.set_enabled_clouds(["RunPod"], sky_cloud.CloudCapability.COMPUTE, ws)
    global_user_state.set_allowed_clouds(check._get_workspace_allowed_clouds(ws), ws)
    out = {}
    for name, args in json.loads(sys.argv[1]).items():
        r = CliRunner().invoke(plan, args)
        out[name] = {"code": r.exit_code, "stdout": r.stdout, "error": repr(r.exception)}
    from launcher.backends.skypilot.catalog import hourly_price
    out["price"] = [hourly_price({"accelerators": "V100:1", "use_spot": True}, "RunPod", "US", True),
                    hourly_price({"accelerators": "V100:1"}, "RunPod", "CA", False),
                    hourly_price({"accelerators": "A6000:1"}, "RunPod", None, False),
                    hourly_price({"accelerators": "H100:1"}, "RunPod", "US", False)]
    print("RESULT " + json.dumps(out))
""")


def write_catalog(home):
    root = home / SKY_CATALOG
    (root / "common").mkdir(parents=True)
    (root / "runpod").mkdir()
    (root / "common" / "accelerators.csv").write_text(
        "AcceleratorName,Clouds\nV100,\"['RunPod']\"\nA6000,\"['RunPod']\"\n")
    (root / "common" / "metadata.csv").write_text("GPU,MemoryGB,Manufacturer\nV100,16,NVIDIA\nA6000,48,NVIDIA\n")
    (root / "runpod" / "vms.csv").write_text(VMS)


def run_plans(tmp_path, cases: dict[str, list[str]]) -> dict:
    home = tmp_path / "home"
    write_catalog(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKY", "AWS_"))}
    # No network: anything SkyPilot would fetch fails at once instead of hanging.
    env.update(HOME=str(home), HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
               NO_PROXY="", SKYPILOT_DISABLE_USAGE_COLLECTION="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cases)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, f"child failed: {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "Updating" not in proc.stderr, "SkyPilot tried to fetch a catalog"
    return json.loads(line[len("RESULT "):])


def test_plan_lists_the_cheapest_option_first_offline(tmp_path):
    tasks = {}
    for acc in ("V100", "A6000"):
        path = tmp_path / f"{acc}.yaml"
        path.write_text(f"name: qs\nresources:\n  accelerators: {acc}:1\nrun: python -m trainers.quickstart\n")
        tasks[acc] = [str(path), "--json", "--hours", "10"]
    both = tmp_path / "both.yaml"
    both.write_text("resources:\n  use_spot: true\n  any_of:\n    - accelerators: V100:1\n"
                    "    - accelerators: A6000:1\nrun: x\n")
    tasks["any_of"] = [str(both), "--json", "--all-regions"]
    tasks["table"] = [str(tasks["V100"][0])]
    tasks["imagenet"] = [str(REPO / "tasks/imagenet.yaml"), "--json", "--hours", "24"]
    out = run_plans(tmp_path, tasks)

    v100 = json.loads(out["V100"]["stdout"])
    assert out["V100"]["code"] == 0
    assert v100[0] == {"cloud": "RunPod", "region": "CA", "instance_type": "1x_V100_SECURE",
                       "accelerators": "V100:1", "spot": True, "price_per_hour": 0.19, "est_cost": 1.9}
    on_demand = [c for c in v100 if not c["spot"]]
    assert on_demand[0]["region"] == "US" and on_demand[0]["price_per_hour"] == 0.39
    assert {c["instance_type"] for c in v100} == {"1x_V100_SECURE"}  # V100:1 means one V100
    prices = [c["price_per_hour"] for c in v100]
    assert prices == sorted(prices)

    a6000 = json.loads(out["A6000"]["stdout"])
    assert [(c["spot"], c["region"], c["price_per_hour"]) for c in a6000] == [(True, "US", 0.25),
                                                                           (False, "CA", 0.46)]
    assert a6000[0]["est_cost"] == 2.5

    rows = json.loads(out["any_of"]["stdout"])
    assert {c["accelerators"] for c in rows} == {"V100:1", "A6000:1"}
    assert len(rows) == 8  # 2 options x 2 regions x spot/on-demand
    assert rows[0]["accelerators"] == "V100:1" and rows[0]["region"] == "CA" and rows[0]["spot"]

    imagenet = json.loads(out["imagenet"]["stdout"])  # the bundled spot task: V100 or A6000
    assert {c["accelerators"] for c in imagenet} == {"V100:1", "A6000:1"}
    assert imagenet[0]["spot"] and imagenet[0]["price_per_hour"] == 0.19 and imagenet[0]["est_cost"] == 4.56

    # What an attempt is charged, once SkyPilot has placed it (cheapest fit in that region).
    assert out["price"] == [0.21, 0.42, 0.46, None]

    table = out["table"]["stdout"].splitlines()
    assert out["table"]["code"] == 0 and table[0].split()[:3] == ["CLOUD", "REGION", "INSTANCE"]
    assert table[1].split()[:2] == ["RunPod", "CA"]
