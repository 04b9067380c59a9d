"""The unit of slide post-processing work, apart from the code that does the work.

`chunks` (which cuts the map into windows and processes them) and `seams` (which decides
which window owns a nucleus) both need it; here neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChunkWindow:
    """One unit of post-processing work, in map pixels (rows, cols), half-open intervals."""

    index: int  # row-major position in the chunk grid; fixes the output row order
    core_r0: int
    core_r1: int
    core_c0: int
    core_c1: int
    win_r0: int
    win_r1: int
    win_c0: int
    win_c1: int

    @property
    def window(self) -> tuple[slice, slice]:
        return slice(self.win_r0, self.win_r1), slice(self.win_c0, self.win_c1)

    @property
    def core(self) -> tuple[slice, slice]:
        return slice(self.core_r0, self.core_r1), slice(self.core_c0, self.core_c1)
