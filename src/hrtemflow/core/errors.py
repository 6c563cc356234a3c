"""One exception type for everything a user can fix: the CLI prints it without a traceback."""


class HrtemflowError(Exception):
    """A problem with the user's input (config, file, option) that they can fix.

    The message must say what is wrong and what to do about it.
    """


class ConfigError(HrtemflowError):
    """The config is invalid; raised before any job starts."""
