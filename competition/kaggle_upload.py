"""Upload a checked submission with the official `kaggle` package, and record the upload beside the file.

`kaggle` is imported only when an upload really happens: importing it authenticates (and may call the
network or print warnings) in kaggle 2.x, which neither a dry run nor the tests should trigger.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from competition.atomic import write_json
from competition.competitions.base import Competition
from competition.errors import CompetitionError
from competition.submission import read_and_validate

TOKEN_URL = "https://www.kaggle.com/settings"
UPLOAD_FAILED = "Could not submit to competition"  # kaggle 2.2.4 returns this message instead of raising


def _kaggle_json_ok(path: Path) -> bool:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("username")) and bool(config.get("key"))


def find_kaggle_credentials(env: Mapping[str, str] | None = None, home: Path | None = None) -> str | None:
    """Where the kaggle package will find credentials, in the order it looks; None if nowhere.

    `env` and `home` default to the live environment at call time (not import time), so tests can patch them.
    """
    env = os.environ if env is None else env
    home = Path.home() if home is None else Path(home)
    if env.get("KAGGLE_API_TOKEN", "").strip():
        return "KAGGLE_API_TOKEN environment variable"
    # kaggle 2.2.4 (kagglesdk) reads the token file from ~/.kaggle only, KAGGLE_CONFIG_DIR is not consulted.
    for name in ("access_token", "access_token.txt"):
        token = home / ".kaggle" / name
        if token.is_file() and token.read_text().strip():
            return str(token)
    if env.get("KAGGLE_CONFIG_DIR"):
        config_dir = Path(env["KAGGLE_CONFIG_DIR"])
    else:
        config_dir = home / ".kaggle"
        if not config_dir.exists():  # kaggle then follows XDG, like it does on Linux
            config_dir = Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    if _kaggle_json_ok(config_dir / "kaggle.json"):
        return str(config_dir / "kaggle.json")
    if env.get("KAGGLE_USERNAME", "").strip() and env.get("KAGGLE_KEY", "").strip():
        return "KAGGLE_USERNAME and KAGGLE_KEY environment variables"
    return None


def credentials_help(slug: str) -> str:
    return (
        f"No Kaggle credentials found. Create a token at {TOKEN_URL} -> API -> Create New Token, then do one of:\n"
        "  1. export KAGGLE_API_TOKEN=<token>\n"
        "  2. save the token as ~/.kaggle/access_token (chmod 600)\n"
        "  3. save the downloaded kaggle.json as ~/.kaggle/kaggle.json or $KAGGLE_CONFIG_DIR/kaggle.json (chmod 600)\n"
        "  4. export KAGGLE_USERNAME=<user> KAGGLE_KEY=<key>\n"
        f"and accept the rules at https://www.kaggle.com/competitions/{slug}/rules before the first submission. "
        "A dry run checks the file without credentials."
    )


def _sidecar_sha(sidecar: Path) -> str | None:
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    return meta.get("sha256") if isinstance(meta, dict) else None


def _record_upload(sidecar: Path, entry: dict) -> str | None:
    """Append `entry` to the sidecar's `uploads`; returns a warning instead of clobbering an unreadable one."""
    meta: dict = {}
    if sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as e:
            return f"{sidecar} is unreadable ({e}); the upload was not recorded there."
        if not isinstance(meta, dict):
            return f"{sidecar} is not a JSON object; the upload was not recorded there."
    meta.setdefault("uploads", []).append(entry)
    write_json(meta, sidecar)
    return None


def submit(
    file: Path,
    message: str,
    competition: Competition,
    data_dir: Path,
    dry_run: bool = False,
    sidecar: Path | None = None,
) -> dict:
    """Check `file` against sampleSubmission.csv again, then upload it like `kaggle competitions submit`."""
    file = Path(file)
    slug = competition.slug
    if not slug:
        raise CompetitionError(
            f"{competition.name} is not a Kaggle competition: there is nothing to submit to."
        )
    if not message.strip():
        raise CompetitionError(
            "Give the submission a message (what model, which folds): Kaggle lists it beside the score."
        )
    frame = read_and_validate(file, competition, data_dir)
    sidecar = Path(sidecar) if sidecar is not None else file.with_suffix(".json")
    sha = hashlib.sha256(file.read_bytes()).hexdigest()
    info = {
        "slug": slug,
        "file": str(file),
        "rows": len(frame),
        "sha256": sha,
        "message": message,
        "dry_run": dry_run,
    }
    written = _sidecar_sha(sidecar)
    if written and written != sha:  # still valid, but not the file the sidecar describes
        print(f"Warning: {file} changed since it was written (sha256 differs from {sidecar}).")

    if dry_run:
        credentials = find_kaggle_credentials()
        print(
            f"Dry run: would submit {file} ({len(frame)} rows, sha256 {sha[:12]}) to {slug} "
            f"with message {message!r}; credentials: {credentials or 'none found'}."
        )
        return {**info, "credentials": credentials}

    credentials = find_kaggle_credentials()
    if credentials is None:
        raise CompetitionError(credentials_help(slug))
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as e:
        # kaggle 2.2.4 imports `six` without declaring it; name the module that is really missing.
        if e.name and e.name.split(".")[0] != "kaggle":
            raise CompetitionError(
                f"The kaggle package cannot be imported: it needs {e.name!r}, which is not installed "
                f"(pip install {e.name.split('.')[0]})."
            ) from e
        raise CompetitionError(f"The kaggle package is missing ({e}): pip install kaggle==2.2.4.") from e

    api = KaggleApi()
    try:
        api.authenticate()
    except SystemExit as e:  # kaggle prints its own help and calls exit(1) when it rejects the credentials
        raise CompetitionError(
            f"Kaggle rejected the credentials from {credentials}. {credentials_help(slug)}"
        ) from e
    except Exception as e:  # a token is checked online: no network surfaces here
        raise CompetitionError(
            f"Could not authenticate with Kaggle using {credentials} ({e}). Is the network up?"
        ) from e
    try:
        response = api.competition_submit(str(file), message, slug)
    except Exception as e:  # requests' HTTPError and friends: say what to check rather than print a traceback
        status = getattr(getattr(e, "response", None), "status_code", None)
        hint = (
            f" Check the slug and accept the rules at https://www.kaggle.com/competitions/{slug}/rules."
            if status in (403, 404)
            else ""
        )
        raise CompetitionError(f"Upload of {file} to {slug} failed ({e}).{hint}") from e
    result = str(getattr(response, "message", None) or response)
    if result == getattr(KaggleApi, "COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE", UPLOAD_FAILED):
        raise CompetitionError(f"Upload of {file} to {slug} failed: {result}. Try again; nothing was scored.")

    entry = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "message": message,
        "slug": slug,
        "sha256": sha,
        "result": result,
    }
    warning = _record_upload(sidecar, entry)
    print(f"Submitted {file} to {slug}: {result}")
    if warning:
        print(f"Warning: {warning}")
    return {**info, "credentials": credentials, "result": result, "sidecar": str(sidecar)}
