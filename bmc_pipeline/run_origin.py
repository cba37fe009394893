"""Runs launched in this process carry the code location's origin, as a UI launch does.

``execute_in_process`` creates its run with no origin. Such a run is stored, but Dagster does not
tie it to the code location: the failure sensor (which by default watches only its own code
location's runs, compared by origin) never sees it fail, and the UI cannot re-execute it. The
command line, the API and the Python API run their work in process (so they work without a
daemon), so while such a run is created here, the instance adds the origin the workspace's code
location ``bmc_pipeline`` (``workspace.yaml``) gives its own runs.

The origin classes are Dagster's internal ones (no public constructor exists for them); this module
is the one place that names them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

# workspace.yaml: the module, its attribute, and the code location's name; a Definitions object
# is served as the repository Dagster names "__repository__"
CODE_LOCATION = "bmc_pipeline"
DEFINITIONS_MODULE = "bmc_pipeline.definitions"
DEFINITIONS_ATTRIBUTE = "defs"
REPOSITORY_NAME = "__repository__"
# the job's Runs tab in the UI lists the runs that carry this tag
REPOSITORY_LABEL_TAG = ".dagster/repository"
REPOSITORY_LABEL = f"{REPOSITORY_NAME}@{CODE_LOCATION}"


def remote_origin(job_name: str) -> RemoteJobOrigin:
    """Where the UI finds ``job_name``: the code location, its repository, the job."""
    target = LoadableTargetOrigin(
        executable_path=sys.executable,
        module_name=DEFINITIONS_MODULE,
        attribute=DEFINITIONS_ATTRIBUTE,
    )
    location = ManagedGrpcPythonEnvCodeLocationOrigin(target, CODE_LOCATION)
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, REPOSITORY_NAME), job_name)


def code_origin(job_name: str) -> JobPythonOrigin:
    """How a process rebuilds ``job_name`` from the run alone (what a re-execution needs)."""
    pointer = ModuleCodePointer(DEFINITIONS_MODULE, DEFINITIONS_ATTRIBUTE)
    return JobPythonOrigin(job_name, RepositoryPythonOrigin(sys.executable, pointer))


@contextmanager
def runs_with_origin(instance: dg.DagsterInstance, job_name: str) -> Iterator[None]:
    """While the ``with`` body runs, runs this instance creates carry ``job_name``'s origins.

    The instance object is the caller's own, opened for this one run; the wrapper is removed
    when the body ends.
    """
    create = instance.create_run_for_job

    def with_origin(*args: Any, **kwargs: Any) -> dg.DagsterRun:
        kwargs.setdefault("remote_job_origin", remote_origin(job_name))
        kwargs.setdefault("job_code_origin", code_origin(job_name))
        return create(*args, **kwargs)

    instance.create_run_for_job = with_origin  # type: ignore[method-assign]
    try:
        yield
    finally:
        del instance.create_run_for_job
