"""Plain helpers the tests share (settings pointed at temporary directories, configuration
files); fixtures stay in ``conftest.py``."""

from __future__ import annotations

import base64
from pathlib import Path

from bmc_pipeline.config import Settings, load_settings
from bmc_pipeline.devdb import free_port
from bmc_pipeline.engine.crypto import Key

ROOT = Path(__file__).resolve().parent.parent.parent


def make_settings(tmp_path: Path, uri: str, database: str, key: Key, **env: str) -> Settings:
    """Settings from the project's backup_config.json, pointed at temporary directories."""
    base = {
        "BMC_CONFIG": str(ROOT / "backup_config.json"),
        "MONGODB_URI": uri,
        "BMC_DATABASE": database,
        "BMC_BACKUP_DIR": str(tmp_path / "backups"),
        "BMC_FILES_ROOT": str(tmp_path / "files"),
        "BMC_BACKUP_KEY": base64.b64encode(key.material).decode(),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    base.update(env)
    s = load_settings(env=base)
    # every path a test may write to lives in its temporary directory, never in the repository
    return s.model_copy(
        update={
            "alerts": s.alerts.model_copy(update={"log_file": str(tmp_path / "alerts.jsonl")}),
            "drill": s.drill.model_copy(update={"log_file": str(tmp_path / "drills.jsonl")}),
            "scanner": s.scanner.model_copy(update={"output_dir": str(tmp_path / "reports")}),
            "audit": s.audit.model_copy(update={"path": str(tmp_path / "audit.log")}),
            "api": s.api.model_copy(update={"tokens_file": str(tmp_path / "api_tokens.json")}),
        }
    )


def unreachable(settings: Settings) -> Settings:
    """The same settings pointed at a loopback port where no server listens (fails fast)."""
    m = settings.mongodb.model_copy(
        update={"uri": f"mongodb://127.0.0.1:{free_port()}/", "server_selection_timeout_ms": 300}
    )
    return settings.model_copy(update={"mongodb": m})


def write_config(settings: Settings, path: Path) -> Path:
    """A configuration file equal to ``settings``: the command line reads files, tests build Settings."""
    path.write_text(settings.model_dump_json(), encoding="utf-8")
    return path
