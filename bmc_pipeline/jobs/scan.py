"""``scan_job``: the recovery scanner, launched from the Dagster UI; it writes both reports."""

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.scanner import scan_settings, write_reports
from bmc_pipeline.engine.vocabulary import Source
from bmc_pipeline.progress import ProgressBar, run_log
from bmc_pipeline.resources import EncryptionResource, MongoResource
from bmc_pipeline.run_audit import audited_run


class ScanConfig(dg.Config):
    source: Source = Source.all
    collection: str | None = Field(default=None, description="only this collection (MongoDB part)")
    root: str | None = Field(default=None, description="directory to scan; default files.root")
    output_dir: str | None = Field(default=None, description="default scanner.output_dir")


def build_scan_job(settings: Settings) -> dg.JobDefinition:
    @dg.op(tags={"bmc/operation": "scan"})
    def scan_op(
        context: dg.OpExecutionContext,
        config: ScanConfig,
        mongo: MongoResource,
        encryption: EncryptionResource,
    ) -> dg.Output[dict[str, Any]]:
        sc = settings.scanner
        keyring = encryption.keyring_if_any()  # a scan reads plaintext exports without one
        log = run_log(context.log.info)
        with audited_run(
            context, settings, keyring, "scan", config.model_dump(mode="json")
        ) as info:
            report = scan_settings(
                settings,
                source=config.source.value,
                collection=config.collection,
                root=Path(config.root) if config.root else None,
                db=mongo.database_handle() if config.source != Source.filesystem else None,
                keyring=keyring,
                log=log,
                progress=ProgressBar("read files:", emit=log),
            )
            info["extra"] = {"summary": report.summary}
        out = Path(config.output_dir) if config.output_dir else settings.path(sc.output_dir)
        json_path, md_path = write_reports(report, out)
        return dg.Output(
            # the summary, and where the whole report is (the command line prints it from there)
            {**report.summary, "report_files": [str(json_path), str(md_path)]},
            metadata={
                **{k: v for k, v in report.summary.items() if isinstance(v, int)},
                "report_json": dg.MetadataValue.path(str(json_path)),
                "report": dg.MetadataValue.md(md_path.read_text(encoding="utf-8")),
            },
        )

    @dg.job(
        tags={"bmc/operation": "scan"},
        config=dg.RunConfig(ops={"scan_op": ScanConfig()}),
        description="find recoverable conversations in MongoDB and in files on disk (read-only)",
    )
    def scan_job() -> None:
        scan_op()

    return scan_job
