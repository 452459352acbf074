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
    OFFSETS,  # [L, K] int64 chosen slash offsets per lane, descending, padded with -1 at the end
    PREFIX,  # [L, S + 1] int64 chosen verticals left of each key
    ENDS,  # [R] int64 one past the last query position of each 64-row block
    OUT,  # out [L, R] int64 cells per lane and row block
    K,
    S,
    R,
    stride_o,
    stride_p,
    TILE: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    lane = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)  # [BLOCK_R] row blocks
    row_ok = rows < R
    e = tl.load(ENDS + rows, mask=row_ok, other=0)
    prefix = PREFIX + lane * stride_p
    end = tl.full([BLOCK_R], -1, tl.int64)  # end of the current run of tiles (-1: none yet)
    start = tl.zeros([BLOCK_R], tl.int64)  # its first key
    tiles = tl.zeros([BLOCK_R], tl.int64)
    covered = tl.zeros([BLOCK_R], tl.int64)  # chosen verticals inside closed runs of tiles
    for j in range(0, K):
        o = tl.zeros([BLOCK_R], tl.int64) + tl.load(OFFSETS + lane * stride_o + j)  # one per row block
        active = row_ok & (o >= 0) & (o < e)  # offsets at or beyond a block's end do not reach it
        x = tl.maximum(e - o, TILE)  # right end of the slash's 64 keys there (clamped at key 0)
        fresh = active & (x - TILE > end)  # a gap: close the run, open a new one at the range
        grow = active & ~fresh & (x > end)  # touching: extend the run to cover the range
        close = fresh & (end >= 0)
        inside = tl.load(prefix + tl.minimum(tl.maximum(end, 0), S), mask=close, other=0) - tl.load(
            prefix + tl.minimum(start, S), mask=close, other=0
        )
        covered += tl.where(close, inside, 0)
        added = tl.where(fresh, 1, tl.where(grow, (x - end + TILE - 1) // TILE, 0))
        start = tl.where(fresh, x - TILE, start)
        end = tl.where(fresh, x, end + TILE * tl.where(grow, added, 0))
        tiles += added
    has = row_ok & (end >= 0)
    v_end = tl.load(prefix + tl.minimum(tl.maximum(end, 0), S), mask=has, other=0)
    covered += tl.where(has, v_end - tl.load(prefix + tl.minimum(start, S), mask=has, other=0), 0)
    columns = v_end - covered  # verticals left of the last tile's end and outside every tile
    cells = tiles * TILE * TILE + columns * TILE
    tl.store(OUT + lane * R + rows, cells, mask=row_ok)


def kernel_cells_triton(
    offsets: torch.Tensor, prefix: torch.Tensor, ends: torch.Tensor, tile: int, block_r: int = 128
) -> torch.Tensor:
    """offsets [L, K] (descending, -1 padded), prefix [L, S + 1], ends [R] -> [L] cells (int64).

    The same function as ``_kernel_cells`` in attention/vertical_slash.py.
    """
    lanes, width = offsets.shape
    offsets, prefix, ends = (x.long().contiguous() for x in (offsets, prefix, ends))
    rows = ends.shape[0]
    out = torch.empty(lanes, rows, dtype=torch.int64, device=offsets.device)
    if lanes == 0 or rows == 0:
        return out.sum(1)
    kernel_cells_fwd_kernel[(lanes, triton.cdiv(rows, block_r))](
        offsets, prefix, ends, out, width, prefix.shape[1] - 1, rows, offsets.stride(0), prefix.stride(0),
        TILE=tile, BLOCK_R=block_r, num_warps=4,
    )  # fmt: skip
    return out.sum(1)
