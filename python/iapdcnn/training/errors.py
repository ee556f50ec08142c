"""The trainer's one error type for settings that cannot work."""


class ConfigError(ValueError):
    """A setting that cannot work; the message names its flag."""
