"""GPU index building for vertical-slash attention in ONE Triton launch (paper A.1.2).

Builds exactly the ``VerticalSlashIndex`` that ``build_vertical_slash_index_torch`` (the PyTorch
definition in triton_vertical_slash.py) builds, field by field, padding entries included, but from
bitmaps instead of sorts: one program per (query head, part).

* part 0, verticals: scatter the keys into ``vert_bitmap`` (duplicates collapse, padding drops),
  one walk over the S keys gives the running count ``vert_prefix`` and the ascending unique list
  ``verticals`` (a set key goes to slot "keys set before it"), and ``vert_count`` of a tile is
  ``vert_prefix[last position + 1]``.
* part 1, slashes: the same scatter and walk over offsets give the slash running count, the sorted
  unique offsets and the packed ``slash_words``; offsets closer than BLOCK_M merge into groups
  (a group starts where the gap to the previous offset exceeds BLOCK_M), a scan over the groups'
  chunk counts gives the flat chunk list, each chunk finds its group by binary search in that scan,
  and each tile's chunk count is the scan at "groups whose smallest offset reaches the tile".

A program walks its head's S positions BLOCK at a time; ``tl.debug_barrier`` (a CTA barrier, which
also orders the program's global stores) separates phases that read what an earlier phase wrote.
The old builder took ~130 small PyTorch launches (2-3.5 ms on an H100 whatever the length).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _zero_and_scatter(BITMAP, IDX, S, N, BLOCK: tl.constexpr):
    """BITMAP [S] uint8 := 1 at every IDX[0..N) entry in [0, S), 0 elsewhere."""
    ar = tl.arange(0, BLOCK)
    for x0 in range(0, S, BLOCK):
        tl.store(BITMAP + x0 + ar, tl.zeros([BLOCK], dtype=tl.uint8), mask=x0 + ar < S)
    tl.debug_barrier()
    for i0 in range(0, N, BLOCK):
        idx = tl.load(IDX + i0 + ar, mask=i0 + ar < N, other=-1)
        ok = (idx >= 0) & (idx < S)
        tl.store(BITMAP + tl.where(ok, idx, 0), tl.full([BLOCK], 1, tl.uint8), mask=ok)
    tl.debug_barrier()


@triton.jit
def _prefix_and_compact(
    BITMAP, PREFIX, LIST, WORDS_OUT, S, NW, PAD: tl.constexpr, PACK: tl.constexpr, BLOCK: tl.constexpr
):
    """PREFIX [S + 1] := set positions < x; LIST[r] := r-th set position (ascending); with PACK also
    WORDS_OUT [NW] := the bitmap packed, bit j of word w at position 32 w + j - PAD. Returns the count."""
    ar = tl.arange(0, BLOCK)
    WORDS: tl.constexpr = BLOCK // 32
    bit_ar = tl.arange(0, 32).to(tl.uint32)
    tl.store(PREFIX, 0)
    carry = 0
    for x0 in range(0, S, BLOCK):
        x = x0 + ar
        bits = tl.load(BITMAP + x, mask=x < S, other=0).to(tl.int32)
        inclusive = tl.cumsum(bits, 0) + carry
        tl.store(PREFIX + x + 1, inclusive, mask=x < S)
        tl.store(LIST + inclusive - bits, x, mask=bits != 0)
        carry += tl.sum(bits, 0)
        if PACK:  # x0 and PAD are multiples of 32: this block's words are whole
            grid = tl.reshape(bits.to(tl.uint32), [WORDS, 32])
            packed = tl.sum(grid << bit_ar[None, :], 1)
            words = (x0 + PAD) // 32 + tl.arange(0, WORDS)
            tl.store(WORDS_OUT + words, packed.to(tl.int32, bitcast=True), mask=words < NW)
    if PACK:  # words wholly before position 0 or past the last block
        zeros = tl.zeros([WORDS], dtype=tl.int32)
        for w0 in range(0, PAD // 32, WORDS):
            words = w0 + tl.arange(0, WORDS)
            tl.store(WORDS_OUT + words, zeros, mask=words < PAD // 32)
        for w0 in range((tl.cdiv(S, BLOCK) * BLOCK + PAD) // 32, NW, WORDS):
            words = w0 + tl.arange(0, WORDS)
            tl.store(WORDS_OUT + words, zeros, mask=words < NW)
    return carry


@triton.jit
def _tile_last(tiles, T, S, BLOCK_M: tl.constexpr):
    """Absolute position of each tile's last query."""
    return tl.minimum((tiles + 1) * BLOCK_M, T) - 1 + (S - T)


@triton.jit
def _build_verticals(
    VIDX, VERTS, VERT_COUNT, VERT_BITMAP, VERT_PREFIX, h, NV, S, T, n_tiles,
    BLOCK_M: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    ar = tl.arange(0, BLOCK)
    bitmap = VERT_BITMAP + h * S
    prefix = VERT_PREFIX + h * (S + 1)
    verts = VERTS + h * NV
    _zero_and_scatter(bitmap, VIDX + h * NV, S, NV, BLOCK)
    n_vert = _prefix_and_compact(bitmap, prefix, verts, prefix, S, 0, 0, False, BLOCK)
    for i0 in range(0, NV, BLOCK):  # unused slots hold S, as the sorted reference pads
        slot = i0 + ar
        tl.store(verts + slot, tl.full([BLOCK], 0, tl.int32) + S, mask=(slot < NV) & (slot >= n_vert))
    tl.debug_barrier()
    for t0 in range(0, n_tiles, BLOCK):
        tiles = t0 + ar
        last = _tile_last(tiles, T, S, BLOCK_M)
        count = tl.load(prefix + last + 1, mask=tiles < n_tiles, other=0)
        tl.store(VERT_COUNT + h * n_tiles + tiles, count, mask=tiles < n_tiles)


@triton.jit
def _search_le(TABLE, n, values, n_steps, BLOCK: tl.constexpr):
    """Per value: the largest j in [0, n] with j == 0 or TABLE[j - 1] <= value (TABLE ascending).

    I.e. how many of TABLE[0..n) are <= value; n_steps >= bit length of n.
    """
    pos = tl.zeros([BLOCK], dtype=tl.int32)
    for b in range(0, n_steps):
        cand = pos + (1 << (n_steps - 1 - b))
        ok = cand <= n
        entry = tl.load(TABLE + cand - 1, mask=ok, other=0)
        pos = tl.where(ok & (entry <= values), cand, pos)
    return pos


@triton.jit
def _build_slashes(
    SIDX, SLASH_WORDS, CHUNK_START, CHUNK_END, CHUNK_FULL, CHUNK_COUNT,
    SBITS, SPREFIX, OFFS, GLO, GHI, CPREFIX,
    h, NS, NW, NC, S, T, n_tiles, n_steps,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PAD: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    ar = tl.arange(0, BLOCK)
    bits_base = SBITS + h * S
    sprefix = SPREFIX + h * (S + 1)
    offs = OFFS + h * NS
    glo = GLO + h * NS
    ghi = GHI + h * NS
    cprefix = CPREFIX + h * (NS + 1)
    _zero_and_scatter(bits_base, SIDX + h * NS, S, NS, BLOCK)
    n_off = _prefix_and_compact(bits_base, sprefix, offs, SLASH_WORDS + h * NW, S, NW, PAD, True, BLOCK)
    tl.debug_barrier()

    # Groups over the sorted offsets: a start where the gap to the previous exceeds BLOCK_M, an end
    # where the gap to the next does; both take the group id of the running count of starts.
    n_groups = 0
    for r0 in range(0, n_off, BLOCK):
        r = r0 + ar
        valid = r < n_off
        o = tl.load(offs + r, mask=valid, other=0)
        before = tl.load(offs + r - 1, mask=valid & (r >= 1), other=0)
        after = tl.load(offs + r + 1, mask=valid & (r + 1 < n_off), other=0)
        start = valid & ((r == 0) | (o - before > BLOCK_M))
        end = valid & ((r + 1 == n_off) | (after - o > BLOCK_M))
        group = tl.cumsum(start.to(tl.int32), 0) + n_groups - 1
        tl.store(glo + group, o, mask=start)
        tl.store(ghi + group, o, mask=end)
        n_groups += tl.sum(start.to(tl.int32), 0)
    for g0 in range(0, NS, BLOCK):  # spare slots, as the reference's scatter_reduce leaves them
        g = g0 + ar
        spare = (g < NS) & (g >= n_groups)
        tl.store(glo + g, tl.full([BLOCK], 0, tl.int32) + S, mask=spare)
        tl.store(ghi + g, tl.full([BLOCK], -1, tl.int32), mask=spare)
    tl.debug_barrier()

    # Chunks per group (a full tile meets keys [p0 - hi, p1 - lo]: hi - lo + BLOCK_M keys), scanned.
    tl.store(cprefix, 0)
    n_chunks = 0
    for g0 in range(0, NS, BLOCK):
        g = g0 + ar
        lo = tl.load(glo + g, mask=g < NS, other=0)
        hi = tl.load(ghi + g, mask=g < NS, other=0)
        count = tl.where(g < n_groups, (hi - lo + BLOCK_M + BLOCK_N - 1) // BLOCK_N, 0)
        tl.store(cprefix + g + 1, tl.cumsum(count, 0) + n_chunks, mask=g < NS)
        n_chunks += tl.sum(count, 0)
    tl.debug_barrier()

    # Flat chunk list: chunk f lies in the group whose scan entry is the last <= f (spare entries
    # past the end repeat the reference's clamp to slot NS - 1).
    for f0 in range(0, NC, BLOCK):
        f = f0 + ar
        group = tl.minimum(_search_le(cprefix + 1, NS, f, n_steps, BLOCK), NS - 1)
        first = tl.load(cprefix + group)
        start = tl.load(ghi + group) - (f - first) * BLOCK_N
        end = tl.load(glo + group)
        # Offsets such a chunk meets in a full tile: [start - BLOCK_N + 1, start + BLOCK_M - 1].
        lo = start - BLOCK_N + 1
        hi = tl.minimum(start + BLOCK_M - 1, S - 1)
        covered = tl.load(sprefix + tl.minimum(tl.maximum(hi + 1, 0), S)) - tl.load(
            sprefix + tl.minimum(tl.maximum(lo, 0), S)
        )
        full = (lo >= 0) & (covered == hi - lo + 1) & (start + BLOCK_M - 1 <= S - 1)
        tl.store(CHUNK_START + h * NC + f, start, mask=f < NC)
        tl.store(CHUNK_END + h * NC + f, end, mask=f < NC)
        tl.store(CHUNK_FULL + h * NC + f, full.to(tl.int8), mask=f < NC)

    # Chunks of the groups that reach a tile: groups whose smallest offset <= its last position.
    for t0 in range(0, n_tiles, BLOCK):
        tiles = t0 + ar
        reached = _search_le(glo, NS, _tile_last(tiles, T, S, BLOCK_M), n_steps, BLOCK)
        count = tl.load(cprefix + reached, mask=tiles < n_tiles, other=0)
        tl.store(CHUNK_COUNT + h * n_tiles + tiles, count, mask=tiles < n_tiles)


@triton.jit
def vertical_slash_index_kernel(
    VIDX, SIDX,  # [Hq, NV], [Hq, NS] integer (negative = padding)
    VERTS, VERT_COUNT, VERT_BITMAP, VERT_PREFIX,  # outputs: VerticalSlashIndex fields
    SLASH_WORDS, CHUNK_START, CHUNK_END, CHUNK_FULL, CHUNK_COUNT,
    SBITS, SPREFIX, OFFS, GLO, GHI, CPREFIX,  # scratch: [Hq, S] u8, [Hq, S+1], 3x [Hq, NS], [Hq, NS+1]
    NV, NS, NW, NC, S, T, n_tiles, n_steps,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PAD: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    h = tl.program_id(0)
    if tl.program_id(1) == 0:
        _build_verticals(
            VIDX, VERTS, VERT_COUNT, VERT_BITMAP, VERT_PREFIX, h, NV, S, T, n_tiles, BLOCK_M, BLOCK
        )
    else:
        _build_slashes(
            SIDX, SLASH_WORDS, CHUNK_START, CHUNK_END, CHUNK_FULL, CHUNK_COUNT,
            SBITS, SPREFIX, OFFS, GLO, GHI, CPREFIX,
            h, NS, NW, NC, S, T, n_tiles, n_steps, BLOCK_M, BLOCK_N, PAD, BLOCK,
        )  # fmt: skip


def index_sizes(nv: int, ns: int, t: int, s: int, block_m: int, block_n: int, pad: int) -> dict[str, int]:
    """Widths of the index fields (shared with the PyTorch builder, so both agree by construction).

    n_chunks is a bound, not the true maximum, so building needs no host sync: groups cover disjoint
    offset ranges, so the sum of (hi - lo) is < S and there are at most NS groups.
    """
    return {
        "n_tiles": math.ceil(t / block_m),
        "n_words": (s + pad) // 32 + 3,
        "n_chunks": (s + ns * block_m) // block_n + ns + 1,
    }


def build_vertical_slash_index_triton(
    vertical_idx: torch.Tensor,
    slash_idx: torch.Tensor,
    t: int,
    s: int,
    block_m: int,
    block_n: int,
    pad: int,
    block: int = 4096,
    num_warps: int = 8,
) -> tuple[torch.Tensor, ...]:
    """[Hq, NV], [Hq, NS] int (negative = padding) -> the index tensors, in VerticalSlashIndex order.

    One launch (plus allocations); entries must be < S (the public op checks this). ``block``: positions
    a program handles per step of its walks (a power of two >= 64); the walks are latency-bound loops,
    so fewer, wider steps are cheaper (benchmarks/bench_vertical_slash_parts.py sweeps it).
    """
    if block < 64 or block & (block - 1):
        raise ValueError(f"vertical-slash index: block must be a power of two >= 64, got {block}.")
    if slash_idx.shape[1] == 0:
        raise ValueError("vertical-slash index: slash_idx needs at least one column (pad with -1).")
    hq, nv = vertical_idx.shape
    ns = slash_idx.shape[1]
    sizes = index_sizes(nv, ns, t, s, block_m, block_n, pad)
    n_tiles, nw, nc = sizes["n_tiles"], sizes["n_words"], sizes["n_chunks"]
    dev = vertical_idx.device
    i32 = dict(dtype=torch.int32, device=dev)
    vidx, sidx = vertical_idx.contiguous(), slash_idx.contiguous()  # any integer dtype, read as is
    verts = torch.empty(hq, nv, **i32)
    vert_count = torch.empty(hq, n_tiles, **i32)
    vert_bitmap = torch.empty(hq, s, dtype=torch.uint8, device=dev)
    vert_prefix = torch.empty(hq, s + 1, **i32)
    slash_words = torch.empty(hq, nw, **i32)
    chunk_start = torch.empty(hq, nc, **i32)
    chunk_end = torch.empty(hq, nc, **i32)
    chunk_full = torch.empty(hq, nc, dtype=torch.int8, device=dev)
    chunk_count = torch.empty(hq, n_tiles, **i32)
    scratch_bits = torch.empty(hq, s, dtype=torch.uint8, device=dev)
    scratch_prefix = torch.empty(hq, s + 1, **i32)
    offs, glo, ghi = (torch.empty(hq, ns, **i32) for _ in range(3))  # sorted offsets, group lo / hi
    cprefix = torch.empty(hq, ns + 1, **i32)  # chunks of the groups before each slot
    vertical_slash_index_kernel[(hq, 2)](
        vidx, sidx, verts, vert_count, vert_bitmap, vert_prefix,
        slash_words, chunk_start, chunk_end, chunk_full, chunk_count,
        scratch_bits, scratch_prefix, offs, glo, ghi, cprefix,
        nv, ns, nw, nc, s, t, n_tiles, max(ns, 1).bit_length(),
        BLOCK_M=block_m, BLOCK_N=block_n, PAD=pad, BLOCK=block, num_warps=num_warps,
    )  # fmt: skip
    return (verts, vert_count, vert_bitmap, vert_prefix, slash_words, chunk_start, chunk_end, chunk_full,
            chunk_count)  # fmt: skip
