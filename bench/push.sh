#!/usr/bin/env bash
# Push benchmark (issue 4), for `just bench`:
#   1. fresh push: `imgbuild push` vs `skopeo copy oci:… docker://…` of the same layout, each to
#      an empty loopback docker-registry (target: imgbuild ≤ 1.0× skopeo's time);
#   2. push of the unchanged image (target: 0 bytes uploaded, ≤ 0.2× the fresh push);
#   3. push after a one-file change (only the changed layer and the config go up).
# RUNS (default 5) runs each; medians and ratios printed. Release build. Needs docker-registry,
# skopeo, busybox-static, curl.
#   DATA_MIB   size of the incompressible data layer (default 64)
set -euo pipefail

RUNS="${RUNS:-5}"
DATA_MIB="${DATA_MIB:-64}"
top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"
for t in docker-registry skopeo curl; do
  command -v "$t" >/dev/null || { echo "bench/push.sh: $t is not installed" >&2; exit 2; }
done

cargo build --release --quiet
BIN="$top/target/release/imgbuild"
work="$(mktemp -d /tmp/imgbuild-bench-push.XXXXXX)"
reg_pid=""
cleanup() {
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null && wait "$reg_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export IMGBUILD_CACHE="$work/store" SOURCE_DATE_EPOCH=1700000000
proj="$work/project"
mkdir -p "$proj/app" "$proj/data"
bash fixtures/base/make-busybox.sh "$work/rootfs" 2>/dev/null
(cd "$work" && "$BIN" -q base import rootfs --output oci:base:bb >/dev/null)
# Incompressible data (so the bytes on the wire are what is measured) and a small app.
head -c $((DATA_MIB * 1024 * 1024)) /dev/urandom > "$proj/data/blob.bin"
for i in $(seq 1 50); do echo "module $i" > "$proj/app/m$i.py"; done

write_config() { # REPOSITORY
  cat > "$proj/imgbuild.toml" <<TOML
[defaults]
platform = "linux/amd64"
[images.api]
repository = "$1"
base = "oci:$work/base:bb"
cmd = ["/bin/sh"]
[[images.api.layers]]
name = "data"
files = [{ from = "data", to = "/data" }]
[[images.api.layers]]
name = "app"
files = [{ from = "app", to = "/app" }]
TOML
}

port=""
start_registry() {
  local dir="$work/reg.$RANDOM$RANDOM"
  mkdir -p "$dir"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$dir/config.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: 127.0.0.1:$port
YML
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  reg_pid=$!
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/")" = 200 ] && return 0
    sleep 0.05
  done
  echo "registry did not start" >&2; exit 1
}
stop_registry() { kill "$reg_pid"; wait "$reg_pid" 2>/dev/null || true; reg_pid=""; }

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

write_config "127.0.0.1:1/bench/api"
(cd "$proj" && "$BIN" -q build api >/dev/null)
layout="$proj/.imgbuild/oci"
cat "$layout"/blobs/sha256/* "$IMGBUILD_CACHE"/blobs/sha256/* > /dev/null # warm the page cache
image_bytes=$(du -sb "$layout/blobs" | cut -f1)

fresh_ib=(); fresh_sk=(); unchanged=(); unchanged_bytes=(); change=(); change_bytes=(); layer_bytes=()
for i in $(seq 1 "$RUNS"); do
  # skopeo: fresh registry, copy the layout imgbuild wrote.
  start_registry
  t0=$(now)
  skopeo copy -q --dest-tls-verify=false "oci:$layout:api" "docker://127.0.0.1:$port/bench/api:latest" >/dev/null
  t1=$(now)
  fresh_sk+=("$(awk "BEGIN {print $t1 - $t0}")")
  stop_registry

  # imgbuild: fresh registry, push; then the unchanged push; then a one-file change.
  start_registry
  write_config "127.0.0.1:$port/bench/api"
  (cd "$proj" && "$BIN" -q build api >/dev/null)
  t0=$(now)
  (cd "$proj" && "$BIN" -q push api --json >/dev/null)
  t1=$(now)
  fresh_ib+=("$(awk "BEGIN {print $t1 - $t0}")")
  t0=$(now)
  out=$(cd "$proj" && "$BIN" -q push api --json)
  t1=$(now)
  unchanged+=("$(awk "BEGIN {print $t1 - $t0}")")
  unchanged_bytes+=("$(echo "$out" | json_field uploaded_bytes)")
  echo "module changed in run $i" > "$proj/app/m7.py"
  (cd "$proj" && "$BIN" -q build api >/dev/null)
  t0=$(now)
  out=$(cd "$proj" && "$BIN" -q push api --json)
  t1=$(now)
  change+=("$(awk "BEGIN {print $t1 - $t0}")")
  change_bytes+=("$(echo "$out" | json_field uploaded_bytes)")
  layer_bytes+=("$(echo "$out" | python3 -c "import json,sys; d=json.load(sys.stdin); print([l['size'] for l in d['layers'] if l['name']=='app'][0])")")
  echo "module 7" > "$proj/app/m7.py"
  stop_registry
done

m_ib=$(printf '%s\n' "${fresh_ib[@]}" | median)
m_sk=$(printf '%s\n' "${fresh_sk[@]}" | median)
m_un=$(printf '%s\n' "${unchanged[@]}" | median)
m_ch=$(printf '%s\n' "${change[@]}" | median)
ratio() { python3 -c "print(f'{$1/$2:.3f}')"; }
echo "push benchmark: image of $image_bytes bytes (busybox base + ${DATA_MIB} MiB data layer + app layer), $RUNS runs, medians"
printf '  %-44s %8.3f s   (runs: %s)\n' "fresh push, imgbuild push" "$m_ib" "${fresh_ib[*]}"
printf '  %-44s %8.3f s   (runs: %s)\n' "fresh push, skopeo copy oci: docker://" "$m_sk" "${fresh_sk[*]}"
printf '  %-44s %8s     (target ≤ 1.0)\n' "ratio imgbuild / skopeo" "$(ratio "$m_ib" "$m_sk")"
printf '  %-44s %8.3f s   uploaded bytes: %s (target 0)\n' "unchanged push" "$m_un" "${unchanged_bytes[*]}"
printf '  %-44s %8s     (target ≤ 0.2)\n' "ratio unchanged / fresh push" "$(ratio "$m_un" "$m_ib")"
printf '  %-44s %8.3f s   uploaded bytes: %s (app layer %s + config)\n' "push after a one-file change" "$m_ch" "${change_bytes[*]}" "${layer_bytes[0]}"
printf '  %-44s %8s\n' "ratio one-file change / fresh push" "$(ratio "$m_ch" "$m_ib")"
