"""deploy/: the Dockerfile and the Helm values name what the code defines (module, attribute,
code location, the tags the run queue limits), so a rename in the code cannot leave them behind.
They are read here, not run: no container engine or cluster is available to the tests."""

from __future__ import annotations

import re

import dagster as dg
import yaml

from bmc_pipeline.config import Settings
from bmc_pipeline.definitions import build_definitions
from tests.support import ROOT

VALUES = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()


def _grpc_args(args: list[str]) -> dict[str, str]:
    return {args[i]: args[i + 1] for i in range(0, len(args) - 1, 2)}


def test_the_code_location_the_image_and_the_chart_load_exists() -> None:
    import importlib

    (deployment,) = VALUES["dagster-user-deployments"]["deployments"]
    args = _grpc_args(deployment["dagsterApiGrpcArgs"])
    module = importlib.import_module(args["--module-name"])
    assert getattr(module, args["--attribute"]) is module.defs  # what workspace.yaml loads too
    cmd = re.search(r"CMD \[(.*)\]", DOCKERFILE, re.S)
    assert cmd is not None
    words = [w.strip().strip('"') for w in cmd.group(1).replace("\\\n", "").split(",")]
    image_args = _grpc_args(words[words.index("grpc") + 1 :])
    assert image_args["--module-name"] == args["--module-name"]
    assert image_args["--attribute"] == args["--attribute"]
    assert int(image_args["--port"]) == deployment["port"]


def test_every_run_queue_limit_names_a_tag_the_jobs_carry(mock_settings: Settings) -> None:
    with dg.instance_for_test():
        defs = build_definitions(mock_settings)
        tags: set[tuple[str, str]] = set()
        for job in defs.get_repository_def().get_all_jobs():
            tags |= set(job.tags.items())
    limits = VALUES["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    for limit in limits["tagConcurrencyLimits"]:
        key, value = limit["key"], limit["value"]
        if isinstance(value, dict):  # per unique value: the key must be on some job
            assert any(k == key for k, _ in tags), key
        else:
            assert (key, value) in tags, (key, value)
    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher"
