"""Where the command line's option values come from, in this order: a flag, then an
environment variable, then the config file, then the table's default.

- Environment: ``BARTIZAN_<NAME>`` for every option (``BARTIZAN_THREADS=8``), read as its flag
  would be; a repeatable option takes a comma-separated list. ``PORT`` and
  ``WEB_CONCURRENCY``, as hosting platforms set them, stand for ``--port`` and ``--workers``
  when their ``BARTIZAN_`` forms are not set. A switch is ``1``/``true``/``yes``/``on`` or
  ``0``/``false``/``no``/``off``.
- Config file: ``--config PATH``, else ``bartizan.toml`` in the current directory, else the
  ``[tool.bartizan]`` table of ``pyproject.toml`` there. Keys are option names (``threads``,
  ``static_max_age`` or ``static-max-age``) plus ``app``; values are TOML values or the text
  a flag would take.

A bad value is one line naming where it came from: ``BARTIZAN_THREADS '0': must be at least
1``, ``bartizan.toml: threads 0: must be at least 1``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Mapping
from typing import Any

from bartizan import options
from bartizan.options import Option, OptionError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# The platforms' names for two options, used when the BARTIZAN_ form is not set.
PLATFORM_ENV = {"port": "PORT", "workers": "WEB_CONCURRENCY"}
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def env_name(option: Option) -> str:
    return "BARTIZAN_" + option.name.upper()


def from_env(option: Option, environ: Mapping[str, str]) -> tuple[bool, Any]:
    """(found, value) of `option` in the environment."""
    for name in (env_name(option), PLATFORM_ENV.get(option.name)):
        if name and name in environ:
            return True, parse_text(option, environ[name], name)
    return False, None


def parse_text(option: Option, text: str, source: str) -> Any:
    """A value written as text, as a flag takes it."""
    try:
        if option.switch:
            word = text.strip().lower()
            if word not in TRUE | FALSE:
                raise ValueError("expected 1/true/yes/on or 0/false/no/off")
            return word in TRUE
    except ValueError as e:
        raise OptionError(option, text, str(e), source=source) from None
    if option.many:
        return [
            _parse_one(option, item.strip(), source) for item in text.split(",") if item.strip()
        ]
    return _parse_one(option, text, source)


def _parse_one(option: Option, text: str, source: str) -> Any:
    try:
        return option.parse(text)
    except ValueError as e:
        raise OptionError(option, text, str(e), source=source) from None


class ConfigFile:
    """The options a config file sets, by option name; empty when there is none."""

    def __init__(self, path: str | None, values: dict[str, Any]):
        self.path = path
        self.values = values

    @classmethod
    def find(cls, explicit: str | None) -> ConfigFile:
        if explicit:
            return cls(explicit, _read_toml(explicit))
        if os.path.isfile("bartizan.toml"):
            return cls("bartizan.toml", _read_toml("bartizan.toml"))
        if os.path.isfile("pyproject.toml"):
            table = _read_toml("pyproject.toml").get("tool", {}).get("bartizan")
            if isinstance(table, dict):
                return cls("pyproject.toml [tool.bartizan]", table)
        return cls(None, {})

    def normalised(self, known: set[str]) -> dict[str, Any]:
        """Keys as option names; an unknown key is a mistake worth one line."""
        out = {}
        for key, value in self.values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise UserConfigError(f"{self.path}: unknown option {key!r}")
            out[name] = value
        return out

    def value(self, option: Option, raw: Any) -> Any:
        """A TOML value as the option's value."""
        source = f"{self.path}: {option.name}"
        if option.switch:
            if not isinstance(raw, bool):
                raise OptionError(option, raw, "must be true or false", source=source)
            return raw
        if isinstance(raw, str):
            return parse_text(option, raw, source)
        if option.many:
            if not isinstance(raw, list):
                raw = [raw]
            items = [_parse_one(option, v, source) if isinstance(v, str) else v for v in raw]
            return [option.coerce(v) for v in items] if option.coerce else items
        return raw


class UserConfigError(ValueError):
    """A config file that cannot be used: one line, exit code 2."""


def _read_toml(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise UserConfigError(f"{path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserConfigError(f"{path}: not valid TOML: {e}") from None


def resolve(
    command: str,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config: ConfigFile,
    only: Collection[str] | None = None,
) -> dict[str, Any]:
    """Every option of `command` (or the `only` ones) from the first source that sets it,
    checked. `flags` holds the parsed value of each flag given on the command line (absent:
    not given)."""
    table = [o for o in options.for_command(command) if only is None or o.name in only]
    from_file = config.normalised({o.name for o in table} | {"app"})
    values = {}
    for option in table:
        if option.name in flags:
            value, source, flag = flags[option.name], None, True
        else:
            found, value = from_env(option, environ)
            source, flag = (env_name(option), False) if found else (None, False)
            if not found and option.name in from_file:
                value = config.value(option, from_file[option.name])
                source = f"{config.path}: {option.name}"
            elif not found:
                value = option.default
        try:
            values[option.name] = options.check_value(option, value, flag=flag)
        except OptionError as e:
            if source is None:
                raise
            raise OptionError(option, e.value, e.problem, source=source) from None
    if only is None:
        options.check_together(values, flag=True)
    return values
