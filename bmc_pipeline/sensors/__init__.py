"""Alerting sensors. None yet: backup failures show in the Dagster UI's run history."""

from __future__ import annotations

import dagster as dg

sensors: list[dg.SensorDefinition] = []
