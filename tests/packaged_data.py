"""Skip marker for tests that need the real template volumes installed by packages."""

import pytest

from monai_slicenav.data.labelled import fewshot_split
from monai_slicenav.downstream.registration_run import default_pairs


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
