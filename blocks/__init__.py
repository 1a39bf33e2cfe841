"""Every block of the zoo, one file each, grouped by category.

Importing this package imports every module under its category folders once, so a new block
file registers itself without any index to edit."""
import importlib
import pkgutil
from pathlib import Path

from blocks.registry import CATEGORIES, blocks, get, register  # noqa: F401

for _category in CATEGORIES:
    _folder = Path(__file__).parent / _category
    for _info in pkgutil.iter_modules([str(_folder)]):
        if not _info.name.startswith("_"):
            importlib.import_module(f"blocks.{_category}.{_info.name}")
