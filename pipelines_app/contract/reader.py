"""Reading fields out of a decoded pipeline.json: problems collected, never raised."""

from __future__ import annotations

import base64
import binascii
import difflib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipelines_app.contract.types import PipelineConfig
from pipelines_app.cron import CRON_EXAMPLES, normalize_cron
from pipelines_app.sizes import SIZE_EXAMPLES, parse_size
from secrets_app.env_names import RESERVED_ENV_PREFIX, is_env_name


@dataclass(frozen=True)
class Problem:
    """An error or warning about one field of one file, in words a person can act on."""

    file: str
    field: str
    message: str

    @classmethod
    def of(cls, file: str, field: str, what: str) -> Problem:
        """A problem whose message reads: file, field, then what is wrong."""
        where = " ".join(part for part in (f"{file}:" if file else "", field) if part)
        return cls(file, field, f"{where} {what}" if where else what)

    def to_json(self) -> dict[str, str]:
        return {"file": self.file, "field": self.field, "message": self.message}


@dataclass
class ParseResult:
    config: PipelineConfig
    errors: list[Problem]
    warnings: list[Problem]


def show(value: Any) -> str:
    """A bad value as people wrote it, shortened: '1.5x', 3.12, [1, 2]."""
    text = f"'{value}'" if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "…"


class FieldReader:
    """Reads fields out of one JSON object, collecting problems instead of raising."""

    def __init__(self, file: str, tz_name: str) -> None:
        self.file = file
        self.default_tz = tz_name
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(Problem.of(self.file, path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(Problem.of(self.file, path, message))

    def unknown_keys(self, data: dict[str, Any], known: tuple[str, ...], prefix: str) -> None:
        for key in data:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.5) or [
                name for name in known if name.endswith(f"_{key}")
            ]
            hint = f"; did you mean '{close[0]}'?" if close else " and is ignored"
            self.warn(f"{prefix}{key}", f"is not a pipeline.json field{hint}")

    # Scalars. Each returns None (after recording an error) when the value is unusable.

    def string(self, value: Any, path: str, *, allow_empty: bool = True) -> str | None:
        if not isinstance(value, str):
            self.error(path, f"{show(value)} must be a string (in double quotes)")
            return None
        if not allow_empty and not value.strip():
            self.error(path, "must not be empty")
            return None
        return value

    def choice(
        self, value: Any, path: str, choices: tuple[str, ...], *, note: str = ""
    ) -> str | None:
        """One of `choices`, or an error naming them all ("a", "b" or "c")."""
        if value in choices:
            return value
        names = [f'"{choice}"' for choice in choices]
        listed = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        self.error(path, f"{show(value)} must be {listed}{note}")
        return None

    def boolean(self, value: Any, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.error(path, f"{show(value)} must be true or false (without quotes)")
            return None
        return value

    def integer(
        self, value: Any, path: str, *, minimum: int, unit: str = "", example: int = 3
    ) -> int | None:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"{show(value)} must be a whole number{unit}, e.g. {example}")
            return None
        if value < minimum:
            self.error(path, f"{value} must be at least {minimum}{unit}")
            return None
        return value

    def number(
        self, value: Any, path: str, *, minimum: float, exclusive: bool = False
    ) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(path, f"{show(value)} must be a number, e.g. 0.5, 1 or 2")
            return None
        if value < minimum or (exclusive and value == minimum):
            relation = "greater than" if exclusive else "at least"
            self.error(path, f"{show(value)} must be {relation} {minimum:g}")
            return None
        return float(value)

    def size(self, value: Any, path: str, *, minimum: int = 1) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool):
            num_bytes = value  # a bare number is bytes
        elif isinstance(value, str):
            try:
                num_bytes = parse_size(value)
            except ValueError:
                self.error(path, f"{show(value)} is not a size; use e.g. {SIZE_EXAMPLES}")
                return None
        else:
            self.error(path, f"{show(value)} is not a size; use e.g. {SIZE_EXAMPLES}")
            return None
        if num_bytes < minimum:
            least = f"{minimum // 1024**2}m" if minimum >= 1024**2 else f"{minimum} byte"
            self.error(path, f"{show(value)} is too small; the minimum is {least}")
            return None
        return num_bytes

    def cron(self, value: Any, path: str) -> str | None:
        text = self.string(value, path)
        if text is None:
            return None
        try:
            return normalize_cron(text)
        except ValueError as exc:
            self.error(path, f"{show(value)} {exc}; use e.g. {CRON_EXAMPLES}")
            return None

    def timezone(self, value: Any, path: str) -> str | None:
        text = self.string(value, path, allow_empty=False)
        if text is None:
            return None
        try:
            ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            self.error(path, f"{show(value)} is not a time zone; use e.g. 'UTC', 'Europe/Berlin'")
            return None
        return text

    def moment(self, value: Any, path: str, tz_name: str) -> datetime | None:
        text = self.string(value, path)
        if text is None:
            return None
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            self.error(
                path,
                f"{show(value)} is not an ISO date-time; use e.g. '2026-01-31T08:00:00' "
                "(the instance's time zone) or '2026-01-31T08:00:00+01:00'",
            )
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(tz_name))
        return moment

    def env_map(self, value: Any, path: str, *, encrypted: bool) -> dict[str, str]:
        if not isinstance(value, dict):
            self.error(path, f"{show(value)} must be an object of NAME: value pairs")
            return {}
        result: dict[str, str] = {}
        for name, item in value.items():
            item_path = f"{path}.{name}"
            if not is_env_name(name):
                self.error(
                    item_path,
                    "is not a valid environment variable name; use letters, digits and _ "
                    "(not starting with a digit)",
                )
                continue
            if name.upper().startswith(RESERVED_ENV_PREFIX):
                self.error(item_path, f"names starting with {RESERVED_ENV_PREFIX} are reserved")
                continue
            if encrypted:
                token = self.fernet_token(item, item_path)
                if token is not None:
                    result[name] = token
            elif isinstance(item, str):
                result[name] = item
            elif isinstance(item, bool | int | float):
                # Environment values are text; say what the pipeline will actually receive.
                text = ("true" if item else "false") if isinstance(item, bool) else str(item)
                self.warn(item_path, f"{show(item)} is not a string; the run gets '{text}'")
                result[name] = text
            else:
                self.error(item_path, f"{show(item)} must be a string")
        return result

    def fernet_token(self, value: Any, path: str) -> str | None:
        hint = 'encrypt the value with this instance\'s ENCRYPTION_KEY ("encrypt a value")'
        if not isinstance(value, str):
            self.error(path, f"must be a Fernet token string; {hint}")
            return None
        try:
            raw = base64.urlsafe_b64decode(value.strip().encode())
        except (binascii.Error, ValueError):
            raw = b""
        # version byte 0x80, timestamp, IV, at least one AES block, HMAC
        if len(raw) < 1 + 8 + 16 + 16 + 32 or raw[0] != 0x80:
            self.error(path, f"is not a Fernet token; {hint}")
            return None
        return value.strip()
