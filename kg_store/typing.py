"""Shared type aliases (PyKEEN/PyG keep these in one `typing` module)."""
from typing import Literal

import numpy as np
import numpy.typing as npt

EntityId = int
RelationId = int
TripleId = int
#: int64 array of shape (n, 3): head id, relation id, tail id
TripleArray = npt.NDArray[np.int64]
#: (relation id, direction) as stored in the CSR: +1 = out-edge (node is head), -1 = in-edge
EdgeType = tuple[int, int]
VectorKind = Literal["entity", "relation", "triple", "image"]
