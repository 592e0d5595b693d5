"""The `deltatune` command on the embedded default (SQLite): what it makes of a data dir that is not there."""

import subprocess
import sys
from pathlib import Path

from core.schema_version import is_at_head
from core.settings import Settings
from tests.worker.processes import ROOT, clean_environment


def test_migrate_creates_a_data_dir_that_does_not_exist_yet(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "there" / "yet"
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "migrate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_environment(DELTATUNE_DATA_DIR=str(data_dir)),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "unable to open database file" not in result.stderr
    assert (data_dir / "deltatune.db").is_file()
    assert is_at_head(Settings(data_dir=data_dir).database_url)
