#!/usr/bin/env bash
# Benchmark of python layers (issue 3), on the job-agent fixture and the Debian bookworm base:
#   A. cold `imgbuild build api` with a warm wheel cache and an empty layer cache
#   B. `uv pip install --target DIR` of the same lock (warm uv cache) + `tar | pigz -p2 -6` of DIR
#   C. the no-op rebuild (every layer cached)
# Prints each run, the medians and the ratio B/A. Uses a release build.
#
# Usage: bench/python.sh [RUNS]        (default 5)
#   UV=/path/to/uv    uv binary (default: uv on PATH, else installed from the package index
#                     into a temporary venv, for the benchmark only)
#   KEEP=1            keep the work directory
set -euo pipefail

RUNS="${1:-5}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/imgbuild-bench-python.XXXXXX")"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
log() { echo "bench/python: $*" >&2; }

command -v pigz >/dev/null || { log "pigz is needed (apt-get install pigz)"; exit 1; }
(cd "$ROOT" && cargo build --release --quiet)
IMGBUILD="$ROOT/target/release/imgbuild"

UV="${UV:-$(command -v uv || true)}"
if [ -z "$UV" ]; then
  log "installing uv into a temporary venv"
  python3 -m venv "$WORK/uvvenv" && "$WORK/uvvenv/bin/pip" install --quiet uv
  UV="$WORK/uvvenv/bin/uv"
fi
export UV_CACHE_DIR="$WORK/uv-cache"
PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3)"

cp -r "$ROOT/fixtures/job-agent" "$WORK/job-agent"
UV="$UV" "$WORK/job-agent/make-lock.sh" --force
(cd "$WORK/job-agent" && "$UV" export --quiet --frozen --no-emit-project -o "$WORK/requirements.txt")
IMGBUILD="$IMGBUILD" "$ROOT/fixtures/base/make-debian-python.sh" --import "$WORK/.bases/debian-python3:bookworm"
export IMGBUILD_CACHE="$WORK/store"

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

imgbuild_cold() {
  rm -rf "$IMGBUILD_CACHE/layers"
  local t; t=$(now)
  (cd "$WORK/job-agent" && "$IMGBUILD" --quiet build api >/dev/null)
  since "$t"
}
imgbuild_noop() {
  local t; t=$(now)
  (cd "$WORK/job-agent" && "$IMGBUILD" --quiet build api >/dev/null)
  since "$t"
}
uv_tar() {
  rm -rf "$WORK/target" "$WORK/target.tar.gz"
  local t; t=$(now)
  "$UV" pip install --quiet --python "$PY" --target "$WORK/target" -r "$WORK/requirements.txt"
  tar -C "$WORK/target" -cf - . | pigz -p2 -6 > "$WORK/target.tar.gz"
  since "$t"
}

log "warming the wheel caches (imgbuild store, uv cache) and the page cache"
imgbuild_cold >/dev/null
uv_tar >/dev/null
imgbuild_cold >/dev/null

A=(); B=(); C=()
for i in $(seq "$RUNS"); do
  a=$(imgbuild_cold); b=$(uv_tar); c=$(imgbuild_noop)
  A+=("$a"); B+=("$b"); C+=("$c")
  printf 'run %d: imgbuild cold %.3fs | uv --target + tar|pigz %.3fs | imgbuild no-op %.3fs\n' "$i" "$a" "$b" "$c"
done
ma=$(printf '%s\n' "${A[@]}" | median)
mb=$(printf '%s\n' "${B[@]}" | median)
mc=$(printf '%s\n' "${C[@]}" | median)
layer=$(cd "$WORK/job-agent" && "$IMGBUILD" --quiet build api --json | python3 -c 'import json,sys; l=json.load(sys.stdin)["layers"][0]; print(l["size"])')
printf '\nmedians over %d runs (%d wheels, python layer %s bytes gzip; uv tarball %s bytes):\n' \
  "$RUNS" "$(grep -c '==' "$WORK/requirements.txt")" "$layer" "$(stat -c %s "$WORK/target.tar.gz")"
printf '  imgbuild api, cold layers, warm wheels : %.3fs\n' "$ma"
printf '  uv pip install --target + tar | pigz   : %.3fs\n' "$mb"
printf '  ratio (uv+tar+pigz / imgbuild)         : %.2fx\n' "$(echo "$mb / $ma" | bc -l)"
printf '  imgbuild api, no-op rebuild            : %.3fs\n' "$mc"
