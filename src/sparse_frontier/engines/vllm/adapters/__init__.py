"""One adapter per supported vLLM release: what differs between them, in one small module each.

The plugin's code is written once; what it must know about a release (how a sub-batch takes
each field of ``CommonAttentionMetadata``) comes from that release's adapter. The KV cache
layout is not listed here: ``cache_io`` learns it from the backend's own writer.

``adapter()`` picks the module of the installed release (the newest adapter not newer than
it) and checks that it classifies every metadata field the release has, exactly: a field it
does not know could be a per-request one that a sub-batch would then take whole.
"""

from __future__ import annotations

import dataclasses
import functools
from types import ModuleType

from . import v0_25, v0_32

#: Oldest first. The supported range is from the first to the last minor release listed.
ADAPTERS: tuple[ModuleType, ...] = (v0_25, v0_32)
SUPPORTED = ">=0.25,<0.33"

_KINDS = ("PER_REQUEST", "PER_TOKEN", "REQUEST_KEYED", "DERIVED", "WHOLE_BATCH")
#: Fields the sub-batch recomputes itself (same in every supported release).
RECOMPUTED = ("query_start_loc", "query_start_loc_cpu", "num_reqs", "num_actual_tokens", "max_query_len",
              "max_seq_len")


def release_of(version: str) -> tuple[int, int]:
    """'0.25.1' / '0.32.0+cpu' / '0.26.0rc1.dev3' -> (0, 25) / (0, 32) / (0, 26)."""
    parts = version.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or "x")
    except (IndexError, ValueError):
        raise ValueError(f"Cannot read a vLLM release from version string {version!r}.") from None


def known_fields(module: ModuleType) -> set[str]:
    """Every CommonAttentionMetadata field the adapter classifies."""
    return {name for kind in _KINDS for name in getattr(module, kind)} | set(RECOMPUTED)


def pick(version: str, fields: set[str]) -> ModuleType:
    """The adapter for vLLM ``version`` whose metadata has ``fields``; one clear error otherwise."""
    release = release_of(version)
    first, last = ADAPTERS[0].RELEASE, ADAPTERS[-1].RELEASE
    if not first <= release <= last:
        raise RuntimeError(
            f"vLLM {version} is outside the range the sparse plugin supports ({SUPPORTED}); "
            f"install a release in that range (pip install 'vllm{SUPPORTED}')."
        )
    module = [m for m in ADAPTERS if m.RELEASE <= release][-1]
    known = known_fields(module)
    if fields != known:
        unknown, missing = sorted(fields - known), sorted(known - fields)
        raise RuntimeError(
            f"vLLM {version}'s CommonAttentionMetadata differs from what the plugin's adapter for "
            f"{module.RELEASE[0]}.{module.RELEASE[1]} knows (new fields: {unknown or 'none'}; gone: "
            f"{missing or 'none'}); use a tested release (0.25.x or 0.32.x) or add an adapter."
        )
    return module


@functools.cache
def adapter() -> ModuleType:
    """The adapter of the installed vLLM (checked once per process)."""
    import vllm
    from vllm.v1.attention.backend import CommonAttentionMetadata

    return pick(vllm.__version__, {f.name for f in dataclasses.fields(CommonAttentionMetadata)})
