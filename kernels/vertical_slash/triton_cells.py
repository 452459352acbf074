"""The paper kernel's cell count of a vertical-slash selection, on the GPU (paper A.1.2, Table 6).

Vertical-Slash and FlexPrefill calibrate their budget on the cells the authors' kernel computes
(``VerticalSlashIndex.kernel_cells`` defines the count; ``_kernel_cells`` there is its PyTorch
form, a loop over runs of nearby slashes that costs one round of launches per run, i.e. seconds
per layer when the selection is scattered). Here each program walks one lane's slashes once, in
ascending key order, for BLOCK_R row blocks at a time: the greedy 64-key tiling of the definition,
one step per slash, every row block of the program in lockstep.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def kernel_cells_fwd_kernel(
    OFFSETS,  # [L, K] int32 chosen slash offsets per lane, descending, padded with -1 at the end
    PREFIX,  # [L, S + 1] int32 chosen verticals left of each key
    ENDS,  # [R] int32 one past the last query position of each 64-row block
    FIRST,  # [L, P] int32 per lane and program: the first offset below the program's largest end
    LAST,  # [L] int32 per lane: the number of chosen offsets (the walk stops at the padding)
    OUT,  # out [L, R] int64 cells per lane and row block
    S,
    R,
    P,
    stride_o,
    stride_p,
    TILE: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    lane = tl.program_id(0)
    pid = tl.program_id(1)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)  # [BLOCK_R] row blocks
    row_ok = rows < R
    e = tl.load(ENDS + rows, mask=row_ok, other=0)
    prefix = PREFIX + lane * stride_p
    offsets = OFFSETS + lane * stride_o
    # Offsets at or beyond every end of this program reach none of its rows: the walk skips them.
    j0 = tl.load(FIRST + lane * P + pid)
    j1 = tl.load(LAST + lane)
    end = tl.full([BLOCK_R], -1, tl.int32)  # end of the current run of tiles (-1: none yet)
    start = tl.zeros([BLOCK_R], tl.int32)  # its first key
    tiles = tl.zeros([BLOCK_R], tl.int32)
    covered = tl.zeros([BLOCK_R], tl.int32)  # chosen verticals inside closed runs of tiles
    pending = tl.zeros([BLOCK_R], tl.int32)  # those of the run closed last step, added a step late
    o_next = tl.load(offsets + j0, mask=j0 < j1, other=-1)
    for j in range(j0, j1):
        # The next offset and the closed run's verticals are loaded a step ahead of their use, so
        # the walk's dependent chain (end, start) never waits on memory.
        o = o_next
        o_next = tl.load(offsets + j + 1, mask=j + 1 < j1, other=-1)
        covered += pending
        active = row_ok & (o < e)  # offsets at or beyond a block's end do not reach it
        x = tl.maximum(e - o, TILE)  # right end of the slash's 64 keys there (clamped at key 0)
        fresh = active & (x - TILE > end)  # a gap: close the run, open a new one at the range
        grow = active & ~fresh & (x > end)  # touching: extend the run to cover the range
        close = fresh & (end >= 0)
        pending = tl.load(prefix + tl.minimum(tl.maximum(end, 0), S), mask=close, other=0) - tl.load(
            prefix + tl.minimum(start, S), mask=close, other=0
        )
        added = tl.where(fresh, 1, tl.where(grow, (x - end + TILE - 1) // TILE, 0))
        start = tl.where(fresh, x - TILE, start)
        end = tl.where(fresh, x, end + TILE * tl.where(grow, added, 0))
        tiles += added
    covered += pending
    has = row_ok & (end >= 0)
    v_end = tl.load(prefix + tl.minimum(tl.maximum(end, 0), S), mask=has, other=0)
    covered += tl.where(has, v_end - tl.load(prefix + tl.minimum(start, S), mask=has, other=0), 0)
    columns = v_end - covered  # verticals left of the last tile's end and outside every tile
    cells = tiles.to(tl.int64) * TILE * TILE + columns.to(tl.int64) * TILE
    tl.store(OUT + lane * R + rows, cells, mask=row_ok)


def kernel_cells_triton(
    offsets: torch.Tensor, prefix: torch.Tensor, ends: torch.Tensor, tile: int, block_r: int = 128
) -> torch.Tensor:
    """offsets [L, K] (descending, -1 padded), prefix [L, S + 1], ends [R] -> [L] cells (int64).

    The same function as ``_kernel_cells`` in attention/vertical_slash.py. Positions and counts are
    int32 in the kernel (keys below 2^31 / 64): half the bytes and faster integer arithmetic.
    """
    lanes, width = offsets.shape
    rows = ends.shape[0]
    if lanes == 0 or rows == 0:
        return torch.zeros(lanes, dtype=torch.int64, device=offsets.device)
    programs = triton.cdiv(rows, block_r)
    valid = offsets >= 0
    last = valid.sum(1, dtype=torch.int32)
    # Each program's largest end; offsets at or above it (a prefix of the descending list) are skipped.
    padded = torch.cat([ends, ends[:1].expand(programs * block_r - rows)])  # no host sync
    reach = padded.view(programs, block_r).amax(1)
    ascending = (-offsets).masked_fill(~valid, torch.iinfo(torch.int64).max).contiguous()
    first = torch.searchsorted(ascending, -reach.long().expand(lanes, -1).contiguous(), right=True)
    offsets, prefix, ends, first = (x.to(torch.int32).contiguous() for x in (offsets, prefix, ends, first))
    out = torch.empty(lanes, rows, dtype=torch.int64, device=offsets.device)
    kernel_cells_fwd_kernel[(lanes, programs)](
        offsets, prefix, ends, first, last, out, prefix.shape[1] - 1, rows, programs, offsets.stride(0),
        prefix.stride(0), TILE=tile, BLOCK_R=block_r, num_warps=4,
    )  # fmt: skip
    return out.sum(1)
