"""User-facing error types: a mistake the user can fix, reported as one line."""


class UserError(Exception):
    """A mistake the user can fix; scripts print `error: <message>` (one line) and exit 2."""


class ConfigError(UserError):
    """Bad config file, overlay name, key, value type or override."""


class EnvError(UserError):
    """Unknown environment id, missing optional dependency or unsupported spaces."""


class CheckpointError(UserError):
    """Missing, incomplete or corrupt checkpoint."""


def first_line(error: BaseException) -> str:
    """`Type: first line of the message` (just `Type` for an empty message), for one-line errors."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
