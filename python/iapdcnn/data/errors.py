"""Errors raised by the data layer. Each names the dataset, file or argument at fault."""


class DataError(ValueError):
    """A dataset file is missing, truncated or corrupt, or a loader argument is wrong."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The dataset is not on this machine; the message says how to install it or where to point."""
