"""Options with their own infra stay SkyPilot task YAML: SkyPilot's loader takes the options on
its own infras whole, and its task schema takes those on ours (kaggle, local), which only its
Resources constructor refuses, as it refuses them in resources.infra."""

from __future__ import annotations

import pytest
import yaml

import sky
from sky.utils import common_utils, schemas

from launcher.placement import option_infras
from launcher.task import parse_task

SKY_INFRAS = """\
name: anywhere
resources:
  accelerators: V100:1
  any_of:
    - infra: vast
      use_spot: true
    - infra: vast
    - infra: aws/us-east-1
      use_spot: true
    - infra: ssh/lab
run: echo hi
"""

OURS = """\
name: anywhere
resources:
  ordered:
    - infra: kaggle
      accelerators: T4:1
    - infra: vast
      accelerators: RTX4090:1
      use_spot: true
    - infra: local
run: echo hi
"""


def test_options_on_skypilot_infras_load_in_skypilot():
    doc = yaml.safe_load(SKY_INFRAS)
    t = sky.Task.from_yaml_config(doc)
    assert {str(r.cloud).lower() for r in t.resources} >= {"vast", "aws"}
    assert option_infras(parse_task(SKY_INFRAS, where="t.yaml"), "local") == \
        ["vast", "vast", "aws/us-east-1", "ssh/lab"]


def test_options_on_our_infras_pass_the_task_schema():
    common_utils.validate_schema(yaml.safe_load(OURS), schemas.get_task_schema(), "Invalid task YAML: ")
    assert option_infras(parse_task(OURS, where="t.yaml"), "local") == ["kaggle", "vast", "local"]
    with pytest.raises(Exception, match="kaggle"):
        sky.Task.from_yaml_config(yaml.safe_load(OURS))
