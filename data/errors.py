"""Errors for dataset mistakes (annotation files, label files, image folders)."""
from models.errors import DetrZooError


class DataError(DetrZooError):
    """A dataset that cannot be trained on correctly; `where` names the file (and line or ids)."""
