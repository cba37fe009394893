"""``daily_report_job``: the daily report through every alert channel (``alerts.daily_report``)."""

from datetime import datetime, timezone

import dagster as dg

from bmc_pipeline.config import Settings
from bmc_pipeline.engine.daily import daily_report
from bmc_pipeline.engine.deployment import Deployment
from bmc_pipeline.engine.watchdog import problems
from bmc_pipeline.jobs.history import health_at

DAILY_REPORT_JOB = "daily_report_job"


def build_report_job(settings: Settings) -> dg.JobDefinition:
    @dg.op(tags={"bmc/operation": "report"})
    def daily_report_op(context: dg.OpExecutionContext) -> dg.Output[dict[str, object]]:
        now = datetime.now(timezone.utc)
        health = health_at(settings, context.instance, now)
        found = problems(health, settings, now)
        alert = daily_report(health, found, now)
        results = Deployment(settings).notifier().send(alert)
        delivered = sorted(r.channel for r in results if r.ok)
        context.log.info(f"{alert.title}; delivered to {', '.join(delivered) or 'no channel'}")
        return dg.Output(
            {"title": alert.title, "risks": found, "delivered": delivered},
            metadata={"risks": len(found), "report": dg.MetadataValue.md(alert.text)},
        )

    @dg.job(name=DAILY_REPORT_JOB, description="the daily backup report, through every channel")
    def daily_report_job() -> None:
        daily_report_op()

    return daily_report_job
