"""Join objects that block borders cut in two, and number all objects once.

Each block of a large plane labels its objects on its own (IDs 1..n). The
IDs are made unique by an offset per block (:func:`block_offsets`); objects
that two neighbouring blocks both see in their comparison zone are matched
(:func:`matching_pairs`) and joined (:class:`LabelUnion`); finally the IDs
that were written are renumbered 1..N (:meth:`LabelUnion.final_ids`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def block_offsets(counts: Sequence[int] | np.ndarray, /) -> np.ndarray:
    """Offset added to each block's IDs so that all IDs are unique.

    Examples
    --------
    >>> block_offsets([3, 0, 5]).tolist()
    [0, 3, 3]
    """
    values = np.asarray(counts, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(values)[:-1]]).astype(np.int64) if values.size else values


def matching_pairs(labels_a: np.ndarray, labels_b: np.ndarray, /, *, min_overlap: float = 0.5) -> np.ndarray:
    """Objects of two labellings of the same pixels that are the same object.

    Parameters
    ----------
    labels_a, labels_b : numpy.ndarray
        Two label images of the same shape (0 = background).
    min_overlap : float
        Two objects match when their overlap is at least this share of the
        smaller of the two (within these pixels).

    Returns
    -------
    numpy.ndarray
        Shape (n, 2), int64: matching ``(label_a, label_b)`` pairs.

    Notes
    -----
    The share of the *smaller* object is used, not intersection over union,
    so that an object that one block sees whole and its neighbour sees split
    in two (a watershed seed outside the neighbour's view) is still joined:
    both halves lie mostly inside the whole.

    Examples
    --------
    >>> a = np.array([[1, 1, 0, 2, 2]]); b = np.array([[7, 7, 7, 0, 9]])
    >>> matching_pairs(a, b).tolist()
    [[1, 7], [2, 9]]
    """
    if labels_a.shape != labels_b.shape:
        raise ValueError(f"label images differ in shape: {labels_a.shape} and {labels_b.shape}")
    a = labels_a.ravel().astype(np.int64)
    b = labels_b.ravel().astype(np.int64)
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.empty((0, 2), dtype=np.int64)
    pairs, overlap = np.unique(np.stack([a[both], b[both]], axis=1), axis=0, return_counts=True)
    ids_a, size_a = np.unique(a[a > 0], return_counts=True)
    ids_b, size_b = np.unique(b[b > 0], return_counts=True)
    smaller = np.minimum(size_a[np.searchsorted(ids_a, pairs[:, 0])], size_b[np.searchsorted(ids_b, pairs[:, 1])])
    return pairs[overlap >= min_overlap * smaller]


class LabelUnion:
    """Union-find over provisional IDs ``1..n_ids`` (0 stays background).

    Examples
    --------
    >>> u = LabelUnion(5)
    >>> u.join(np.array([[1, 4], [4, 5]]))
    >>> u.final_ids(np.array([1, 2, 4, 5])).tolist()
    [0, 1, 2, 0, 1, 1]
    """

    def __init__(self, n_ids: int) -> None:
        self._parent = np.arange(n_ids + 1, dtype=np.int64)

    def find(self, label: int) -> int:
        """The representative of ``label``'s group."""
        parent = self._parent
        root = label
        while parent[root] != root:
            root = int(parent[root])
        while parent[label] != root:  # path compression
            parent[label], label = root, int(parent[label])
        return root

    def join(self, pairs: np.ndarray) -> None:
        """Put the two IDs of every ``(a, b)`` row in one group."""
        for a, b in np.asarray(pairs, dtype=np.int64).reshape(-1, 2):
            root_a, root_b = self.find(int(a)), self.find(int(b))
            if root_a != root_b:
                self._parent[max(root_a, root_b)] = min(root_a, root_b)

    def final_ids(self, written: np.ndarray) -> np.ndarray:
        """Lookup table from provisional to final IDs.

        Parameters
        ----------
        written : numpy.ndarray
            Provisional IDs that occur in the output (others are objects
            seen only in a margin and never written).

        Returns
        -------
        numpy.ndarray
            ``table[provisional] = final``: groups numbered 1..N in the order
            of their smallest written ID, 0 for background and unwritten IDs.
        """
        table = np.zeros(self._parent.size, dtype=np.int64)
        written = np.unique(np.asarray(written, dtype=np.int64))
        written = written[written > 0]
        roots = np.array([self.find(int(w)) for w in written], dtype=np.int64)
        unique_roots, first = np.unique(roots, return_index=True)
        order = np.argsort(first)
        numbers = np.empty(unique_roots.size, dtype=np.int64)
        numbers[order] = np.arange(1, unique_roots.size + 1)
        table[written] = numbers[np.searchsorted(unique_roots, roots)]
        return table
