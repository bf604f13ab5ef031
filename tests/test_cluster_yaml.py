"""cluster.yaml, checked offline with Ray's own schema and config preparation, and against the
per-trial ask of the CARLA study it exists for."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from envs.carla.pool_config import CarlaPoolConfig
from study.spec import load_spec
from study.trainable import trial_resources

CLUSTER_YAML = Path(__file__).resolve().parent.parent / "cluster.yaml"
SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


@pytest.fixture
def cluster() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def schema_check(config: dict[str, Any]) -> None:
    jsonschema.validate(config, json.loads(SCHEMA.read_text()))


def test_cluster_yaml_matches_rays_schema(cluster: dict[str, Any]) -> None:
    schema_check(cluster)


def test_the_schema_check_catches_a_typo_key(cluster: dict[str, Any]) -> None:
    cluster["setup_comands"] = cluster.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        schema_check(cluster)


def test_rays_config_preparation_and_validation_accept_it(cluster: dict[str, Any]) -> None:
    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_rays_validation_catches_an_unknown_head_node_type(cluster: dict[str, Any]) -> None:
    cluster["head_node_type"] = "no_such_type"
    schema_check(cluster)  # the schema alone lets it through
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(cluster))


def test_gpu_nodes_fit_carla_ablation_and_every_carla_slot_is_usable(cluster: dict[str, Any]) -> None:
    spec = load_spec("carla_ablation")
    ask = trial_resources(spec)
    assert ask["carla"] == 1 and ask["gpu"] > 0
    pool = CarlaPoolConfig.model_validate(spec.carla_pool)
    node_types = cluster["available_node_types"]
    carla_nodes = {name: t["resources"] for name, t in node_types.items() if t["resources"].get("carla")}
    assert carla_nodes, "no node type advertises carla slots"
    assert "carla" not in node_types[cluster["head_node_type"]]["resources"]
    for name, node in carla_nodes.items():
        fits = min(
            math.floor(node["CPU"] / ask["cpu"]),
            math.floor(node["GPU"] / ask["gpu"]),
            math.floor(node["carla"] / ask["carla"]),
        )
        assert fits >= 1, f"{name}: {node} cannot hold one trial asking {ask}"
        # CPUs and GPUs for every slot, and as many slots as the pool has port blocks on a node.
        assert fits == node["carla"] == pool.n_slots, f"{name}: {fits} trials fit, {node['carla']} slots, pool {pool.n_slots}"
