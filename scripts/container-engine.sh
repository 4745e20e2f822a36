#!/usr/bin/env bash
# Prepares a container engine for the testcontainers provider of scripts/database/ on a
# Debian machine that reaches Debian's package mirror but no container registry: rootful Podman
# serving the Docker API on a socket of its own, a Debian base image made with debootstrap and
# imported under the name docker/postgres-cron/Dockerfile starts FROM, and the pg_cron image.
#
#   eval "$(scripts/container-engine.sh)"      # prepare (idempotent), then export its environment
#   ORDER_AUTOMATION_DB=testcontainers npm test
#   scripts/container-engine.sh down           # stop the API service and our containers
#
# Subcommands: up (default; progress on stderr, the environment to export on stdout), env (only
# print the environment), status (exit 0 when the socket answers), down.
# Every step checks before it acts, so a second `up` takes a few seconds.
#
# The engine settings here (runc, ulimits, cgroupfs) are properties of this kind of machine, not of
# the project: they live in a containers.conf of ours, named by CONTAINERS_CONF, never in the library.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dockerfile_dir="$repo/docker/postgres-cron"
# Must equal CONTAINER_IMAGE in scripts/database/testcontainers.ts: building it here means the
# provider's own build finds every layer cached.
image=localhost/order-automation-postgres-cron:15

conf_dir=/etc/order-automation
conf="$conf_dir/containers.conf"
state_dir=/var/lib/order-automation
socket=/run/order-automation-podman.sock
pidfile=/run/order-automation-podman.pid
service_log=/var/log/order-automation-podman.log

packages=(podman runc uidmap slirp4netns fuse-overlayfs conmon containernetworking-plugins iptables catatonit debootstrap curl)

# Seconds since the start on every line: CI's log then shows where the time goes.
log() { printf '[container-engine +%ss] %s\n' "$SECONDS" "$*" >&2; }
die() { log "error: $*"; exit 1; }

print_env() {
  printf 'export DOCKER_HOST=%q\n' "unix://$socket"
  # Ryuk (testcontainers' reaper) is an image from a registry; the provider removes its container itself.
  printf 'export TESTCONTAINERS_RYUK_DISABLED=true\n'
  printf 'export CONTAINERS_CONF=%q\n' "$conf"
  # This kind of machine carries a /.dockerenv, so testcontainers would think it runs inside a
  # container and reach the ports through the Podman bridge's gateway; they are published on the
  # host's loopback too, and that is the only address our test traffic should go to.
  printf 'export TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1\n'
}

answers() {
  [ -S "$socket" ] && [ "$(curl -fsS --max-time 2 --unix-socket "$socket" http://podman/_ping 2>/dev/null)" = OK ]
}

# The image the Dockerfile starts FROM, fully qualified there so that no short-name lookup happens.
base_image() {
  local from
  from="$(awk 'toupper($1) == "FROM" { print $2; exit }' "$dockerfile_dir/Dockerfile")"
  [ -n "$from" ] || die "no FROM line in $dockerfile_dir/Dockerfile"
  printf '%s\n' "$from"
}

install_packages() {
  local missing=() p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  mkdir -p "$state_dir"
  # The packages above are all that rootful Podman needs here (curl: to ask the socket whether it
  # answers); recommends would add buildah, dbus and netavark. Output goes to a log shown on failure.
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$state_dir/apt.log" 2>&1 ||
    { tail -n 20 "$state_dir/apt.log" >&2; die "apt-get failed (log: $state_dir/apt.log)"; }
}

write_conf() {
  local wanted
  wanted="$(cat <<'CONF'
# Written by scripts/container-engine.sh: settings this kind of machine needs, not the project.
[containers]
# The VM's hard limits are below Podman's defaults, and raising them is not permitted.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
# crun refuses the hybrid (v1 + unified) cgroup layout; runc copes with it.
runtime = "runc"
# No systemd runs here: no systemd cgroup manager, no journald.
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
)"
  if [ "$(cat "$conf" 2>/dev/null)" != "$wanted" ]; then
    log "writing $conf"
    mkdir -p "$conf_dir"
    printf '%s\n' "$wanted" > "$conf"
    # A running service read the old settings.
    if answers; then log "restarting podman system service for the new settings"; stop_service; fi
  fi
}

start_service() {
  if answers; then return; fi
  stop_service
  log "starting podman system service on $socket (log: $service_log)"
  # Its own session, stdin closed and output to a file: it outlives this script and must not hold
  # the caller's terminal or pipes open.
  setsid podman system service --time=0 "unix://$socket" </dev/null >>"$service_log" 2>&1 &
  echo $! > "$pidfile"
  local _
  for _ in $(seq 100); do
    answers && return
    kill -0 "$(cat "$pidfile")" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$service_log" >&2 || true
  die "podman system service did not answer on $socket"
}

# Stops the service we started (by its recorded pid, and only if it still is that service). Silent:
# `down` runs last in CI, after the test summary.
stop_service() {
  local pid
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  if [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "system service .*$socket"; then
    kill "$pid"
    local _
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  fi
  rm -f "$pidfile"
  # A socket file nobody answers on is left by a killed service; one that answers is not ours to break.
  answers || rm -f "$socket"
}

# The first "deb" URI for the suite in the machine's APT sources (one-line and deb822 formats).
debian_mirror() {
  local suite="$1" files=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do [ -f "$f" ] && files+=("$f"); done
  {
    [ ${#files[@]} -eq 0 ] || awk -v suite="$suite" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) print $i
      }' "${files[@]}"
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      awk -v suite="$suite" '
        BEGIN { RS = ""; FS = "\n" }
        {
          types = uris = suites = ""; enabled = "yes"
          for (n = 1; n <= NF; n++) {
            if ($n ~ /^#/) continue
            split($n, kv, ":"); key = tolower(kv[1]); value = substr($n, length(kv[1]) + 2)
            gsub(/^[ \t]+|[ \t]+$/, "", value)
            if (key == "types") types = value
            else if (key == "uris") uris = value
            else if (key == "suites") suites = value
            else if (key == "enabled") enabled = tolower(value)
          }
          if (enabled == "no" || (" " types " ") !~ / deb /) next
          if ((" " suites " ") ~ (" " suite " ")) { split(uris, u, /[ \t]+/); print u[1] }
        }' "$f"
    done
  } | head -n 1
}

build_base() {
  local base="$1" tag suite mirror rootfs
  if podman image exists "$base"; then return; fi
  # debian:bookworm-slim -> bookworm
  tag="${base##*:}"
  suite="${tag%-slim}"
  if [ "$base" = "$tag" ] || [[ "$base" != *debian* ]]; then
    die "cannot make $base with debootstrap: the Dockerfile should start FROM a debian:<suite>[-slim] image"
  fi
  mirror="$(debian_mirror "$suite")"
  [ -n "$mirror" ] || die "no 'deb' source for $suite in /etc/apt/sources.list or /etc/apt/sources.list.d/"
  rootfs="$state_dir/rootfs-$suite"
  log "making $base with debootstrap --variant=minbase $suite from $mirror"
  # A half-made root from an interrupted run would make debootstrap fail.
  rm -rf "$rootfs"
  mkdir -p "$state_dir"
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$state_dir/debootstrap.log" 2>&1 ||
    { tail -n 20 "$state_dir/debootstrap.log" >&2; die "debootstrap failed (log: $state_dir/debootstrap.log)"; }
  # The image's apt must reach the mirror the way the host's does (a snapshot mirror's expired
  # Release files, a proxy): carry over those settings only.
  apt-config dump | grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy) ' \
    > "$rootfs/etc/apt/apt.conf.d/99host-mirror" || true
  # Like the official slim image: no downloaded packages, no package lists.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" --numeric-owner -c . | podman import --quiet --change 'CMD ["bash"]' - "$base" >/dev/null
  rm -rf "$rootfs"
}

build_image() {
  local tag="$image" build_args=()
  # ORDER_AUTOMATION_PG_CRON_SOURCE (a pg_cron-<version>.tar.gz): pg_cron built from that source,
  # under the tag scripts/database.ts gives that variant.
  if [ -n "${ORDER_AUTOMATION_PG_CRON_SOURCE:-}" ]; then
    local file
    file="$(basename "$ORDER_AUTOMATION_PG_CRON_SOURCE")"
    cp "$ORDER_AUTOMATION_PG_CRON_SOURCE" "$dockerfile_dir/vendor/$file"
    tag="$image-${file%.tar.gz}"
    build_args=(--build-arg "PG_CRON_SOURCE=$file")
  fi
  log "building $tag from docker/postgres-cron (layers cached after the first build)"
  # --pull=never: there is no registry; the base was imported above. The provider builds the same
  # Dockerfile again through the API and finds every layer cached.
  # --format docker: what builds through the Docker API produce, so both share one layer cache.
  mkdir -p "$state_dir"
  podman build --pull=never --format docker "${build_args[@]}" -t "$tag" "$dockerfile_dir" >"$state_dir/build.log" 2>&1 ||
    { tail -n 30 "$state_dir/build.log" >&2; die "podman build failed (log: $state_dir/build.log)"; }
  # Each build through testcontainers adds its labels as new, uncached steps and moves the tag,
  # leaving the previous top images untagged; the cached layers below stay (they have children).
  podman image prune -f >/dev/null
}

# Removes our pg_cron containers that a killed test run left (a finished run removes its own).
remove_containers() {
  local ids=() tags=() t
  # The image and its pg_cron-from-source variants (tags "$image-pg_cron-<version>").
  mapfile -t tags < <(podman images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep -F "$image" || true)
  for t in "${tags[@]}"; do
    mapfile -t -O "${#ids[@]}" ids < <(podman ps -aq --filter "ancestor=$t" 2>/dev/null || true)
  done
  if [ ${#ids[@]} -gt 0 ]; then
    log "removing left-over containers ${ids[*]}"
    podman rm -f -t 0 "${ids[@]}" >/dev/null
  fi
}

up() {
  [ "$(id -u)" -eq 0 ] || die "run as root: this prepares a rootful Podman"
  command -v apt-get >/dev/null || die "this script prepares Podman on Debian (apt-get); elsewhere start Docker or Podman yourself and set DOCKER_HOST"
  local started=$SECONDS
  install_packages
  export CONTAINERS_CONF="$conf"
  write_conf
  start_service
  build_base "$(base_image)"
  build_image
  log "ready in $((SECONDS - started)) s: podman $(podman version --format '{{.Server.Version}}' 2>/dev/null)"
  print_env
}

case "${1:-up}" in
  up) up ;;
  env) print_env ;;
  status) answers ;;
  down)
    export CONTAINERS_CONF="$conf"
    command -v podman >/dev/null && remove_containers
    stop_service
    ;;
  *) die "usage: $0 [up|env|status|down]" ;;
esac
