#!/usr/bin/env bash
# scripts/realzfs.sh COMMAND [ARGS...]
#
# Real OpenZFS for zferry's tests: a QEMU guest (Debian 12, OpenZFS 2.3 by
# default) built by the shared scripts in <checkout>/../shared/realzfs.
#
#   ensure            build the guest image into the cache folder if it is not
#                     there yet (~7 min, needs root), then save a booted state
#                     once (~30 s) so that later starts take ~2 s
#   start             ensure, then boot the guest in the background
#   stop              power the guest off; every start begins from the clean image
#   status            is the guest running? (exit 1 if not)
#   run CMD [ARG...]  run CMD in the guest as root over ssh. stdin, stdout and
#                     stderr pass through and the exit status is CMD's (255 if
#                     ssh itself failed). As with ssh, the args are joined into
#                     one remote shell line: quote accordingly.
#   put LOCAL REMOTE  copy a host file into the guest (mode 0755), e.g. a test binary
#   ssh-args          print the ssh argument list, one per line
#                     (use: mapfile -t a < <(realzfs.sh ssh-args); ssh "${a[@]}" zfs list)
#
# The guest starts with no pool; make one inside it, e.g.
#   realzfs.sh run 'truncate -s 1G /var/tmp/v && zpool create tank /var/tmp/v'
#
# A test binary in the guest (e.g. from .ci/run):
#   scripts/realzfs.sh start
#   scripts/realzfs.sh put "$BIN" /root/conformance
#   scripts/realzfs.sh run /root/conformance --test-threads=1; rc=$?
#   scripts/realzfs.sh stop      # the guest's changes are discarded
# The guest is Debian 12 (glibc 2.36): build the binary on a compatible host or
# statically (musl).
#
# Env knobs:
#   ZFERRY_REALZFS_CACHE    image folder (default /var/cache/zferry/realzfs);
#                           keep it outside any checkout, it is ~1.5 GiB
#   ZFERRY_REALZFS_SCRIPTS  folder with build-image.sh and vm.sh (default: found
#                           next to the checkout, see below)
#   ZFS_SUITE, SSH_PORT, MEM, CPUS, ...  passed on to build-image.sh / vm.sh
set -euo pipefail

CACHE=${ZFERRY_REALZFS_CACHE:-/var/cache/zferry/realzfs}

die() { echo "realzfs: $*" >&2; exit 2; }

# The shared scripts live in ../shared/realzfs next to the main checkout. From a
# git worktree, the main checkout is the parent of the common .git folder.
scripts_dir() {
  if [ -n "${ZFERRY_REALZFS_SCRIPTS:-}" ]; then echo "$ZFERRY_REALZFS_SCRIPTS"; return; fi
  local here top common
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  top=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null) || top=$(dirname "$here")
  common=$(git -C "$here" rev-parse --path-format=absolute --git-common-dir 2>/dev/null) || common=$top/.git
  for d in "$top/../shared/realzfs" "$(dirname "$common")/../shared/realzfs"; do
    if [ -x "$d/vm.sh" ] && [ -x "$d/build-image.sh" ]; then (cd "$d" && pwd); return; fi
  done
  die "cannot find build-image.sh and vm.sh in $top/../shared/realzfs; set ZFERRY_REALZFS_SCRIPTS"
}

SCRIPTS=$(scripts_dir)
vm() { "$SCRIPTS/vm.sh" "$CACHE" "$@"; }

# build-image.sh deletes its rootfs folder only after root.img is written, so
# a leftover rootfs means an interrupted build.
image_complete() {
  local f
  for f in root.img vmlinuz initrd.img id_ed25519 versions.txt; do
    [ -s "$CACHE/$f" ] || return 1
  done
  [ ! -e "$CACHE/rootfs" ]
}

ensure() {
  mkdir -p "$CACHE"
  # One build at a time per cache folder, even with several sessions.
  exec 9>"$CACHE/.lock"
  flock 9
  if ! image_complete; then
    [ "$(id -u)" = 0 ] || die "no OpenZFS guest image in $CACHE; building one needs root (run: sudo $0 ensure)"
    echo "realzfs: building the OpenZFS guest image in $CACHE (~7 min, log: $CACHE/build.log)" >&2
    rm -f "$CACHE/booted.qcow2" "$CACHE/booted.cfg"
    if ! "$SCRIPTS/build-image.sh" "$CACHE" >"$CACHE/build.log" 2>&1; then
      tail -20 "$CACHE/build.log" >&2
      die "image build failed; full log in $CACHE/build.log"
    fi
  fi
  if [ ! -f "$CACHE/booted.qcow2" ]; then
    echo "realzfs: saving a booted state for fast starts (~30 s)" >&2
    vm save-booted
  fi
  flock -u 9
}

need_running() {
  vm status >/dev/null 2>&1 || die "the guest is not running; start it with: $0 start"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  ensure) ensure; echo "realzfs: ready: $CACHE ($(tr '\n' ' ' <"$CACHE/versions.txt"))" >&2 ;;
  start) ensure; vm start ;;
  stop) if [ -d "$CACHE" ]; then vm stop; fi ;;
  status) if [ -d "$CACHE" ]; then vm status; else echo "stopped (no image in $CACHE)"; exit 1; fi ;;
  run)
    [ $# -gt 0 ] || die "usage: $0 run CMD [ARG...]"
    need_running
    exec "$SCRIPTS/vm.sh" "$CACHE" run "$@" ;;
  put)
    [ $# -eq 2 ] || die "usage: $0 put LOCAL REMOTE"
    [ -f "$1" ] || die "no such file: $1"
    need_running
    vm run "cat > '$2' && chmod 0755 '$2'" <"$1" ;;
  ssh-args) vm ssh-args ;;
  *) die "usage: $0 ensure|start|stop|status|run CMD...|put LOCAL REMOTE|ssh-args" ;;
esac
