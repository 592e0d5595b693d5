"""Which server the client commands talk to and which key they send, found as users expect.

The URL: `--url`, else `DELTATUNE_URL`, else http://127.0.0.1:8000 (where `deltatune serve`
listens). The key: `--api-key`, else `DELTATUNE_API_KEY`, else the key `deltatune serve` saved in
`<DELTATUNE_DATA_DIR>/api-key` (`.deltatune/api-key` from the folder it was started in).
"""

from dataclasses import dataclass
from pathlib import Path

from core.settings import ClientSettings

KEY_FILE_NAME = "api-key"  # in the data dir; `deltatune serve` writes it (service/cli.py)


class NoApiKey(Exception):
    """No key from any of the places looked in; the message says where to put one."""


@dataclass(frozen=True)
class Connection:
    url: str
    api_key: str


def find_connection(*, url: str | None, api_key: str | None) -> Connection:
    """The server and key from the flags given (None when not given), the environment, the key file."""
    settings = ClientSettings()
    key = api_key or settings.api_key or _saved_key(settings.data_dir / KEY_FILE_NAME)
    if not key:
        raise NoApiKey(
            "no API key: pass --api-key, set DELTATUNE_API_KEY, or run this where `deltatune serve` runs "
            f"(it saves its key in {settings.data_dir / KEY_FILE_NAME}; set DELTATUNE_DATA_DIR if it "
            "uses another data dir)"
        )
    return Connection(url or settings.url, key)


def _saved_key(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
    except OSError as error:  # there, but unreadable: say so rather than "no key"
        raise NoApiKey(f"cannot read the API key saved in {path}: {error.strerror}") from error
