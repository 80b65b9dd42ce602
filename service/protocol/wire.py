"""numpy arrays on the wire: little-endian float32, row-major, in ``bytes`` (see the .proto).

Shared by the server and the Python client; imports only numpy and the generated messages.
"""

from __future__ import annotations

import numpy as np

from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb

WIRE_DTYPE = np.dtype("<f4")


def matrix_to_pb(array: np.ndarray) -> pb.Matrix:
    """A 2-D array as a ``Matrix`` message."""
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {array.shape}")
    data = np.ascontiguousarray(array, dtype=WIRE_DTYPE).tobytes()
    return pb.Matrix(rows=array.shape[0], cols=array.shape[1], data=data)


def matrix_from_pb(matrix: pb.Matrix) -> np.ndarray:
    """A ``Matrix`` message as a (rows, cols) float32 array (a read-only view of the bytes)."""
    expected = matrix.rows * matrix.cols * WIRE_DTYPE.itemsize
    if len(matrix.data) != expected:
        raise ValueError(f"matrix {matrix.rows}x{matrix.cols} needs {expected} bytes, got {len(matrix.data)}")
    return np.frombuffer(matrix.data, dtype=WIRE_DTYPE).reshape(matrix.rows, matrix.cols)


def vector_to_bytes(vector: np.ndarray) -> bytes:
    """One embedding row as packed little-endian float32."""
    return np.ascontiguousarray(vector, dtype=WIRE_DTYPE).tobytes()


def vector_from_bytes(data: bytes) -> np.ndarray:
    """Packed little-endian float32 as a 1-D float32 array."""
    if len(data) % WIRE_DTYPE.itemsize:
        raise ValueError(f"embedding of {len(data)} bytes is not a whole number of float32")
    return np.frombuffer(data, dtype=WIRE_DTYPE)
