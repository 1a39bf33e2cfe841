"""Every block of the zoo, one file each, grouped by category.

Importing this package imports every block file once (blocks.registry.import_all_blocks), so a new
block file registers itself without any index to edit."""
from blocks.registry import CATEGORIES, blocks, get, import_all_blocks, register  # noqa: F401

import_all_blocks()
