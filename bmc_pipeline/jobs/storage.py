"""``storage_job``: the stored backups' own upkeep: copy to and from the remote store, delete one,
apply the retention policy now.

The command line's ``push``, ``pull``, ``delete`` and ``rotate`` run this job, so they are in the
run history under one job and a failure alerts; the UI's Launchpad offers the same four actions.
A pulled backup that does not validate fails the run, with the report attached.
"""

from enum import Enum
from typing import Any

import dagster as dg
from pydantic import Field

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.crypto import KeyRing
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.errors import BmcError
from bmc_pipeline.engine.files import BlobStore
from bmc_pipeline.engine.remote import RemoteStore, require_remote
from bmc_pipeline.engine.retention import RetentionPolicy, delete_backup, rotate
from bmc_pipeline.engine.store import BackupStore, check_backup_id
from bmc_pipeline.engine.validate import validate_backup
from bmc_pipeline.progress import Log, run_log
from bmc_pipeline.resources import EncryptionResource, StorageResource
from bmc_pipeline.run_audit import audited_run
from bmc_pipeline.run_kinds import OPERATION_TAG, tag_run


class StorageAction(str, Enum):
    push = "push"
    pull = "pull"
    delete = "delete"
    rotate = "rotate"


class StorageConfig(dg.Config):
    action: StorageAction = Field(
        default=StorageAction.rotate,
        description="push: copy backups to storage.remote_url; pull: fetch them from there and "
        "validate them; delete: one backup, by exact id (retention guards apply); rotate: apply "
        "the retention policy now",
    )
    backup_ids: list[str] = Field(
        default_factory=list, description="push, pull, delete: these backups (delete: exactly one)"
    )
    all: bool = Field(
        default=False,
        description="push: every local backup not yet at the remote; pull: every remote one not here",
    )
    dry_run: bool = Field(default=True, description="rotate: say what would go, delete nothing")


def _push(config: StorageConfig, store: BackupStore, keyring: KeyRing, remote: RemoteStore,
          log: Log) -> dict[str, Any]:  # fmt: skip
    if config.all:
        there = set(remote.backup_ids())
        ids = [r.backup_id for r in store.refs() if r.backup_id not in there]
    else:
        ids = [store.resolve(b).backup_id for b in config.backup_ids]
    pushed = [remote.push(store, store.ref(b), keyring, log=log).as_dict() for b in ids]
    return {"pushed": pushed, "remote_url": remote.url,
            "capture": remote.push_capture(store, keyring, log=log)}  # fmt: skip


def _pull(config: StorageConfig, store: BackupStore, blobs: BlobStore, keyring: KeyRing,
          remote: RemoteStore) -> dict[str, Any]:  # fmt: skip
    if config.all:
        here = {r.backup_id for r in store.refs()}
        ids = [b for b in remote.backup_ids() if b not in here]
    elif config.backup_ids:
        ids = list(config.backup_ids)
    else:
        raise BmcError("give a backup id ('bmc-backup list --remote' shows them), or --all")
    rows = []
    for bid in ids:
        ref = remote.pull(store, bid, keyring)
        report = validate_backup(store, ref, keyring, blobs=blobs)
        rows.append(
            {"backup_id": ref.backup_id, "path": str(ref.manifest_path), **report.as_dict()}
        )
    out = {"pulled": rows, "count": len(rows), "remote_url": remote.url, "store": str(store.root)}
    if config.all:  # a new machine: the captured changes too, for restores to the second
        out["capture"] = remote.pull_capture(store, keyring)
    return out


def build_storage_job(settings: Settings) -> dg.JobDefinition:
    r = settings.retention

    @dg.op(tags={OPERATION_TAG: "storage"})
    def storage_op(
        context: dg.OpExecutionContext,
        config: StorageConfig,
        encryption: EncryptionResource,
        storage: StorageResource,
    ) -> dg.Output[dict[str, Any]]:
        keyring = encryption.keyring()
        store = storage.store()
        log = run_log(context.log.info)
        if config.action == StorageAction.rotate:  # the retention asset's work, launched now
            tag_run(context, {OPERATION_TAG: "retention"})
        with audited_run(
            context, settings, keyring, config.action.value, config.model_dump(mode="json")
        ) as info:
            if config.action == StorageAction.push:
                out = _push(config, store, keyring, require_remote(storage.remote()), log)
            elif config.action == StorageAction.pull:
                blobs = Deployment(settings).blobs(keyring)
                out = _pull(config, store, blobs, keyring, require_remote(storage.remote()))
            elif config.action == StorageAction.delete:
                if len(config.backup_ids) != 1:
                    raise BmcError("delete takes exactly one backup id")
                bid = config.backup_ids[0]
                check_backup_id(bid)  # an exact id: never 'latest' for something this final
                out = {**delete_backup(store, keyring, bid, storage.remote()),
                       "remote": storage.remote() is not None}  # fmt: skip
            else:
                result = rotate(
                    store, keyring,
                    RetentionPolicy(daily=r.daily, weekly=r.weekly, monthly=r.monthly),
                    dry_run=config.dry_run, grace_s=r.blob_grace_hours * 3600, log=log,
                    remote=storage.remote(),
                )  # fmt: skip
                out = {**result.as_dict(),
                       "decisions": [d.__dict__ for d in result.decisions]}  # fmt: skip
            info["extra"] = {"action": config.action.value}
        invalid = [row["backup_id"] for row in out.get("pulled", []) if not row["ok"]]
        if invalid:
            raise dg.Failure(
                description=f"pulled backup(s) do not validate: {', '.join(invalid)}",
                metadata={"report": dg.MetadataValue.json(out)},
            )
        return dg.Output(out, metadata={"report": dg.MetadataValue.json(out)})

    @dg.job(
        tags={OPERATION_TAG: "storage"},
        config=dg.RunConfig(ops={"storage_op": StorageConfig()}),
        description="copy backups to or from the remote store, delete one, or apply retention "
        "now (rotate, a dry run by default)",
    )
    def storage_job() -> None:
        storage_op()

    return storage_job
