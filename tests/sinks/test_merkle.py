"""The ledger's Merkle tree hashes and proves exactly as RFC 9162 / RFC 6962 say.

Known answers: the Certificate Transparency reference tree (eight leaves, the test data of the
CT and transparency-dev implementations), whose roots, audit paths and consistency proofs any
RFC 6962 implementation reproduces. Beyond them, every size up to 40 is checked against a naive
implementation written straight from the RFC's recursive definitions (MTH, PATH, PROOF).
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_ranges,
    inclusion_ranges,
    leaf_hash,
    range_hashes,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [  # (leaf index, tree size, audit path)
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CT_CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CT_LEAF_HASHES = [leaf_hash(data) for data in CT_LEAVES]


# --------------------------------------------------------------------------- naive reference


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1, recursively, over leaf *data*."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[n])."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    """RFC 9162 2.1.4.1 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if whole else [mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*subproof(m, leaves[:k], whole), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def data(n: int) -> list[bytes]:
    return [f"record {i}".encode() for i in range(n)]


def indexed(leaves: list[bytes]) -> list[tuple[int, bytes]]:
    return [(i, leaf_hash(leaf)) for i, leaf in enumerate(leaves)]


def prove_inclusion(index: int, leaves: list[bytes]) -> list[bytes]:
    return range_hashes(inclusion_ranges(index, len(leaves)), indexed(leaves))


def prove_consistency(old: int, leaves: list[bytes]) -> list[bytes]:
    return range_hashes(consistency_ranges(old, len(leaves)), indexed(leaves))


# --------------------------------------------------------------------------- known answers


def test_the_empty_tree_hashes_to_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert Frontier().root() == EMPTY_ROOT
    assert tree_root([]) == EMPTY_ROOT


def test_roots_of_the_certificate_transparency_reference_tree() -> None:
    frontier = Frontier()
    for leaf, expected in zip(CT_LEAF_HASHES, CT_ROOTS, strict=True):
        frontier.append(leaf)
        assert frontier.root().hex() == expected


@pytest.mark.parametrize(("index", "size", "expected"), CT_INCLUSION)
def test_inclusion_proofs_of_the_reference_tree(index: int, size: int, expected: list[str]) -> None:
    proof = prove_inclusion(index, CT_LEAVES[:size])
    assert [node.hex() for node in proof] == expected
    root = bytes.fromhex(CT_ROOTS[size - 1])
    assert verify_inclusion(index, size, CT_LEAF_HASHES[index], proof, root)


@pytest.mark.parametrize(("old", "new", "expected"), CT_CONSISTENCY)
def test_consistency_proofs_of_the_reference_tree(old: int, new: int, expected: list[str]) -> None:
    proof = prove_consistency(old, CT_LEAVES[:new])
    assert [node.hex() for node in proof] == expected
    old_root, new_root = bytes.fromhex(CT_ROOTS[old - 1]), bytes.fromhex(CT_ROOTS[new - 1])
    assert verify_consistency(old, new, old_root, new_root, proof)


# --------------------------------------------------------------------------- every small size


@pytest.mark.parametrize("size", range(1, 41))
def test_roots_and_proofs_match_the_rfc_definitions_at_every_size(size: int) -> None:
    leaves = data(size)
    root = mth(leaves)
    assert tree_root(leaf_hash(leaf) for leaf in leaves) == root
    for index in range(size):
        proof = prove_inclusion(index, leaves)
        assert proof == path(index, leaves)
        assert verify_inclusion(index, size, leaf_hash(leaves[index]), proof, root)
    for old in range(1, size + 1):
        proof = prove_consistency(old, leaves)
        assert proof == subproof(old, leaves, True)
        assert verify_consistency(old, size, mth(leaves[:old]), root, proof)


def test_a_frontier_survives_being_stored_as_hex() -> None:
    frontier = Frontier()
    frontier.extend(leaf_hash(leaf) for leaf in data(13))
    copy = Frontier.from_hex(13, frontier.to_hex())
    copy.append(leaf_hash(b"next"))
    frontier.append(leaf_hash(b"next"))
    assert copy.root() == frontier.root() == mth([*data(13), b"next"])
    with pytest.raises(ValueError, match="nodes"):
        Frontier.from_hex(12, frontier.to_hex())


# --------------------------------------------------------------------------- tampering


@settings(deadline=None)  # timings belong to benchmarks: a busy machine must not fail it
@given(st.integers(2, 64), st.data())
def test_a_changed_leaf_proof_node_or_root_fails_inclusion(size: int, draw: st.DataObject) -> None:
    leaves = data(size)
    index = draw.draw(st.integers(0, size - 1))
    root = mth(leaves)
    proof = prove_inclusion(index, leaves)
    leaf = leaf_hash(leaves[index])
    assert verify_inclusion(index, size, leaf, proof, root)
    assert not verify_inclusion(index, size, leaf_hash(b"another record"), proof, root)
    assert not verify_inclusion(index, size, leaf, proof, mth(data(size + 1)))
    assert not verify_inclusion((index + 1) % size, size, leaf, proof, root)
    assert not verify_inclusion(index, size, leaf, proof[:-1], root)
    assert not verify_inclusion(index, size, leaf, [*proof, proof[-1]], root)
    at = draw.draw(st.integers(0, len(proof) - 1))
    bent = [*proof[:at], bytes([proof[at][0] ^ 1]) + proof[at][1:], *proof[at + 1 :]]
    assert not verify_inclusion(index, size, leaf, bent, root)


@settings(deadline=None)
@given(st.integers(2, 64), st.data())
def test_consistency_fails_for_a_rewritten_history(size: int, draw: st.DataObject) -> None:
    leaves = data(size)
    old = draw.draw(st.integers(1, size - 1))
    proof = prove_consistency(old, leaves)
    assert verify_consistency(old, size, mth(leaves[:old]), mth(leaves), proof)

    changed = draw.draw(st.integers(0, old - 1))
    rewritten = [*leaves[:changed], b"rewritten", *leaves[changed + 1 :]]
    # the rewritten ledger's own proof, against the head signed before the rewrite
    forged = prove_consistency(old, rewritten)
    assert not verify_consistency(old, size, mth(leaves[:old]), mth(rewritten), forged)
    # nor does the honest proof tie the old head to the rewritten tree
    assert not verify_consistency(old, size, mth(leaves[:old]), mth(rewritten), proof)
    if proof:
        assert not verify_consistency(old, size, mth(leaves[:old]), mth(leaves), proof[:-1])


def test_proof_ranges_refuse_impossible_requests() -> None:
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_ranges(5, 5)
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_ranges(6, 5)
    assert not verify_inclusion(0, 0, EMPTY_ROOT, [], EMPTY_ROOT)
    assert verify_consistency(0, 5, EMPTY_ROOT, mth(data(5)), [])
    with pytest.raises(ValueError, match="missing"):
        range_hashes([(0, 4)], indexed(data(3)))


def test_record_hashes_grow_the_same_tree_as_their_leaves() -> None:
    hashes = [hashlib.sha256(f"record {i}".encode()).hexdigest() for i in range(37)]
    by_leaf, by_record = Frontier(), Frontier()
    by_leaf.extend(leaf_hash(bytes.fromhex(h)) for h in hashes)
    by_record.extend_records(hashes[:20])
    for record_hash in hashes[20:]:
        by_record.append_record(record_hash)
    assert (by_record.size, by_record.root()) == (by_leaf.size, by_leaf.root())
    assert by_record.root() == mth([bytes.fromhex(h) for h in hashes])


@pytest.mark.parametrize("part", [1, 2, 4, 8])
def test_a_tree_joined_from_aligned_parts_has_the_root_of_all_its_leaves(part: int) -> None:
    """How a verify spread over processes gets each tree head: the trees of whole parts
    before, joined, then the root of the part a checkpoint falls in."""
    leaves = [leaf_hash(bytes([n])) for n in range(37)]
    joined = Frontier()
    for start in range(0, len(leaves), part):
        own = Frontier()
        for end, leaf in enumerate(leaves[start : start + part], start + 1):
            own.append(leaf)
            assert joined.root_with(own.root()) == tree_root(leaves[:end])
        if own.size == part:
            joined.append_tree(own.nodes[0], part)
            assert joined.root() == tree_root(leaves[: start + part])


def test_a_part_must_start_aligned_on_its_size() -> None:
    tree = Frontier()
    tree.extend([leaf_hash(b"a"), leaf_hash(b"b")])
    with pytest.raises(ValueError, match="cannot follow"):
        tree.append_tree(leaf_hash(b"c"), 4)
    with pytest.raises(ValueError, match="cannot follow"):
        tree.append_tree(leaf_hash(b"c"), 3)
