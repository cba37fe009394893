"""Backup and recovery for the bmc-cotizaciones MongoDB database and the BMC chatbot files.

``from bmc_pipeline import restore_from_backup`` gives the restore API; it is imported on first
use so that importing the package stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "restore_from_backup"]


def __getattr__(name: str) -> Any:
    if name == "restore_from_backup":
        from bmc_pipeline.python_api import restore_from_backup

        return restore_from_backup
    raise AttributeError(name)
