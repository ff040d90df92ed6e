"""A Merkle tree over the ledger's record hashes, hashed as RFC 9162 (Certificate Transparency
version 2.0, section 2.1) specifies, with its inclusion and consistency proofs.

* Leaves, in ``seq`` order: leaf ``i`` (0-based) is the record at ``seq`` ``i + 1``; its data
  is the 32 raw bytes of that record's ``hash`` (the hex of :mod:`sinks.chain`).
* ``leaf hash = SHA-256(0x00 || data)``, ``node hash = SHA-256(0x01 || left || right)``; the
  hash of the empty tree is SHA-256 of nothing. A tree of ``n`` leaves splits at the largest
  power of two below ``n`` (RFC 9162, 2.1.1).
* A tree head is ``(size, root)``: a signed checkpoint at ``seq`` N signs the head of the tree
  of the first N records (:mod:`sinks.checkpoints`).

The proofs are RFC 9162's (2.1.3 inclusion, 2.1.4 consistency): lists of node hashes, deepest
first, checked by the RFC's verification algorithms, so any RFC 9162 / RFC 6962 verifier
(Certificate Transparency and transparency-log libraries) checks them too.

The tree is never stored whole. A :class:`Frontier` (the roots of the perfect subtrees that
make up a tree, at most 64 hashes) grows leaf by leaf; proofs name the subtrees they need as
leaf ranges (:func:`inclusion_ranges`, :func:`consistency_ranges`), which
:func:`range_hashes` computes in one pass over the leaves. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the tree with no leaves (RFC 9162, 2.1.1: the hash of an empty string)."""

_sha256 = hashlib.sha256

Range = tuple[int, int]
"""Leaves ``start`` (included) to ``end`` (excluded), 0-based."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return _sha256(LEAF_PREFIX + data).digest()


def record_leaf(record_hash: str) -> bytes:
    """The leaf hash of a ledger record, from its hex ``hash``."""
    return _sha256(LEAF_PREFIX + bytes.fromhex(record_hash)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n`` > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


# --------------------------------------------------------------------------- growing a tree


class Frontier:
    """The tree of the leaves appended so far, kept as the roots of its perfect subtrees,
    largest (leftmost) first: one per set bit of :attr:`size`."""

    __slots__ = ("nodes", "size")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(nodes) != size.bit_count():
            raise ValueError(f"a frontier of {size} leaves has {size.bit_count()} nodes")
        self.size = size
        self.nodes = list(nodes)

    def append(self, leaf: bytes) -> None:
        """Add a leaf hash (see :func:`leaf_hash`) on the right."""
        nodes = self.nodes
        nodes.append(leaf)
        self.size += 1
        size = self.size
        while not size & 1:  # two perfect subtrees of equal size merge into one
            right = nodes.pop()
            nodes[-1] = _sha256(NODE_PREFIX + nodes[-1] + right).digest()
            size >>= 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def append_record(self, record_hash: str) -> None:
        """:meth:`append` the leaf of a ledger record, given its hex ``hash``."""
        self.extend_records((record_hash,))

    def extend_records(self, record_hashes: Iterable[str]) -> None:
        """Append the leaves of ledger records, given their hex hashes."""
        self.extend_record_digests(map(bytes.fromhex, record_hashes))

    def extend_record_digests(self, digests: Iterable[bytes]) -> None:
        """Append the leaves of ledger records, given their hashes as raw bytes. One loop with
        no call per leaf but SHA-256: it runs over every record a checkpoint covers."""
        nodes, size, sha256 = self.nodes, self.size, _sha256
        for digest in digests:
            node = sha256(LEAF_PREFIX + digest).digest()
            size += 1
            merged = size
            while not merged & 1:
                node = sha256(NODE_PREFIX + nodes.pop() + node).digest()
                merged >>= 1
            nodes.append(node)
        self.size = size

    def append_tree(self, root: bytes, size: int) -> None:
        """Add on the right a perfect subtree of ``size`` leaves (a power of two) given by its
        root; the tree's size must be a multiple of ``size`` (the subtree starts aligned)."""
        if size < 1 or size & (size - 1) or self.size % size:
            raise ValueError(f"a subtree of {size} leaves cannot follow {self.size} leaves")
        nodes = self.nodes
        nodes.append(root)
        self.size += size
        merged = self.size // size
        while not merged & 1:
            right = nodes.pop()
            nodes[-1] = _sha256(NODE_PREFIX + nodes[-1] + right).digest()
            merged >>= 1

    def root_with(self, right: bytes) -> bytes:
        """The root of this tree followed by leaves whose own tree (folded as :meth:`root`
        does) has root ``right``, when those leaves are fewer than the smallest perfect subtree
        of this one, i.e. they start aligned (for a range of records hashed elsewhere)."""
        root = right
        for node in reversed(self.nodes):
            root = node_hash(node, root)
        return root

    def root(self) -> bytes:
        """The tree head's root hash."""
        if not self.nodes:
            return EMPTY_ROOT
        root = self.nodes[-1]
        for node in reversed(self.nodes[:-1]):
            root = node_hash(node, root)
        return root

    def copy(self) -> Frontier:
        return Frontier(self.size, self.nodes)

    def to_hex(self) -> list[str]:
        return [node.hex() for node in self.nodes]

    @classmethod
    def from_hex(cls, size: int, nodes: Sequence[str]) -> Frontier:
        """A frontier from :meth:`to_hex`; raises ValueError when it cannot be one."""
        raw = [bytes.fromhex(node) for node in nodes]
        if any(len(node) != 32 for node in raw):
            raise ValueError("a frontier node is not a SHA-256 hash")
        return cls(size, raw)


def tree_root(leaves: Iterable[bytes]) -> bytes:
    """The root of the tree of ``leaves`` (leaf hashes), in order."""
    frontier = Frontier()
    frontier.extend(leaves)
    return frontier.root()


# --------------------------------------------------------------------------- proofs


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The subtrees whose roots make up the inclusion proof of leaf ``index`` in the tree of
    ``size`` leaves (RFC 9162, 2.1.3.1: PATH), in proof order."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    ranges: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index - start < k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()  # the deepest sibling first
    return ranges


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """The subtrees whose roots make up the consistency proof between the trees of the first
    ``old_size`` and the first ``new_size`` leaves (RFC 9162, 2.1.4.1: PROOF), in proof order.
    Empty when the sizes are equal or the old tree is empty."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from {old_size} leaves to {new_size}")
    if old_size in (0, new_size):
        return []
    ranges: list[Range] = []
    start, end, whole = 0, new_size, True  # SUBPROOF(m, D[start:end], whole)
    m = old_size
    while True:
        n = end - start
        if m == n:
            if not whole:
                ranges.append((start, end))
            break
        k = _split(n)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            whole = False
    ranges.reverse()
    return ranges


def range_hashes(ranges: Sequence[Range], leaves: Iterable[tuple[int, bytes]]) -> list[bytes]:
    """The root of each range of leaves, in the order given.

    ``leaves`` yields ``(index, leaf hash)`` in ascending index order and must cover every
    range (leaves outside them are skipped); the ranges must not overlap.
    """
    wanted = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
    roots: list[bytes | None] = [None] * len(ranges)
    position = 0
    frontier = Frontier()
    for index, leaf in leaves:
        while position < len(wanted) and ranges[wanted[position]][1] <= index:
            position += 1  # a range ended without its leaves: caught below
        if position == len(wanted):
            break
        start, end = ranges[wanted[position]]
        if index < start:
            continue
        if frontier.size != index - start:
            raise ValueError(f"leaf {start + frontier.size} is missing")
        frontier.append(leaf)
        if index == end - 1:
            roots[wanted[position]] = frontier.root()
            frontier = Frontier()
            position += 1
    missing = [ranges[i] for i, root in enumerate(roots) if root is None]
    if missing:
        raise ValueError(f"leaves of {missing[0][0]}..{missing[0][1] - 1} are missing")
    return [root for root in roots if root is not None]


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree ``(size, root)``
    (RFC 9162, 2.1.3.2)."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree ``(old_size, old_root)`` to be the first ``old_size``
    leaves of the tree ``(new_size, new_root)`` (RFC 9162, 2.1.4.2)."""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root starts the path
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


__all__ = [
    "EMPTY_ROOT",
    "Frontier",
    "Range",
    "consistency_ranges",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "range_hashes",
    "record_leaf",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]
