"""The test run never reads the developer's `.env` (bin/run's demo points Microsoft and MAIL_* at
the loopback sandbox); `.ci/run` writes that demo `.env` before it runs bin/test."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from django.conf import settings

# Settings bin/run's demo .env changes, with what they are without it.
DEMO_KEYS = ("MAIL_SMTP_HOST", "MAIL_IMAP_HOST", "MICROSOFT_AUTHORITY_HOST", "MICROSOFT_GRAPH_URL")
PLANTED = {
    "DEBUG": "true",
    "MAIL_SMTP_HOST": "planted-smtp.invalid",
    "MAIL_IMAP_HOST": "planted-imap.invalid",
    "MICROSOFT_AUTHORITY_HOST": "https://planted-login.invalid",
    "MICROSOFT_GRAPH_URL": "https://planted-graph.invalid/v1.0",
}


def read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            values[key.strip()] = value.strip()
    return values


def settings_of(project: Path, **env: str) -> dict[str, str]:
    """DEMO_KEYS as config/settings.py computes them in a fresh process rooted at `project`."""
    base = {k: v for k, v in os.environ.items() if k not in DEMO_KEYS and k != "FLEET_READ_DOTENV"}
    code = f"import config.settings as s; print('\\n'.join(getattr(s, k) for k in {DEMO_KEYS!r}))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project,
        env={**base, "PYTHONPATH": str(project), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split("\n")
    return dict(zip(DEMO_KEYS, out, strict=False))


def test_settings_under_test_did_not_come_from_the_dotenv():
    """This process: whatever `.env` lies beside manage.py (CI plants bin/run's demo one), none of
    its values reached the settings or the environment the tests' worker processes inherit."""
    assert os.environ.get("FLEET_READ_DOTENV") == "false"  # bin/test's switch is what protects us
    dotenv = Path(settings.BASE_DIR) / ".env"
    assert settings.MAIL_SMTP_HOST == "smtp.office365.com"
    assert settings.MICROSOFT_AUTHORITY_HOST == "https://login.microsoftonline.com"
    if dotenv.exists():
        for key, value in read_dotenv(dotenv).items():
            if key in DEMO_KEYS:
                assert getattr(settings, key) != value.rstrip("/"), key
                assert os.environ.get(key) != value, key


def test_a_planted_dotenv_is_read_only_without_the_switch(tmp_path):
    """The real config/settings.py, in a copy of the project with a planted .env: read by default
    (bin/run's case), ignored with FLEET_READ_DOTENV=false (bin/test's case)."""
    (tmp_path / "config").mkdir()
    shutil.copy(Path(settings.BASE_DIR) / "config" / "settings.py", tmp_path / "config")
    (tmp_path / "config" / "__init__.py").write_text("")
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in PLANTED.items()))

    ignored = settings_of(tmp_path, FLEET_READ_DOTENV="false")
    assert ignored == {
        "MAIL_SMTP_HOST": "smtp.office365.com",
        "MAIL_IMAP_HOST": "outlook.office365.com",
        "MICROSOFT_AUTHORITY_HOST": "https://login.microsoftonline.com",
        "MICROSOFT_GRAPH_URL": "https://graph.microsoft.com/v1.0",
    }
    read = settings_of(tmp_path)
    assert read == {k: PLANTED[k] for k in DEMO_KEYS}
