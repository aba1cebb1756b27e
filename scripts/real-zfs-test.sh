#!/usr/bin/env bash
# scripts/real-zfs-test.sh [--filter SUBSTRING] [--suite backend|replication|all]
#
# Runs the backend conformance suite (sim-tests/src/conformance) and then the
# replication platform suite (sim-tests/src/replication_suite, zrepl's
# Replication* platform tests) against real OpenZFS (--suite picks one):
# builds the `zferry-conformance` binary, starts the OpenZFS guest of
# scripts/realzfs.sh (building its image first on a fresh machine, ~7 min, as
# root), makes a file-backed pool `zferry` in the guest, runs the binary there
# with ZFERRY_REAL_ZFS=1, prints its output (each suite ending with its own
# `N passed, N failed` line), stops the guest, and exits with the binary's
# status (0 all passed, 1 some failed, 2 setup refused).
#
# The guest is Debian 12 (glibc 2.36): the binary is built on the host, so the
# host's glibc must not be newer.
#
# Env: CARGO_TARGET_DIR (where cargo builds), ZFERRY_CONFORMANCE_PROFILE (cargo
# profile of the binary: `release` by default; CI uses `dev`, which reuses what
# `cargo test` compiled), ZFERRY_REALZFS_CACHE and the other knobs of
# scripts/realzfs.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(dirname "$here")
realzfs="$here/realzfs.sh"

# The pool the suite works in, and its size (a sparse file in the guest).
POOL=zferry
POOL_BYTES=4G
GUEST_BIN=/root/zferry-conformance

die() { echo "real-zfs-test: $*" >&2; exit 2; }

filter=()
suite=all
while [ $# -gt 0 ]; do
  case "$1" in
    --filter) [ $# -ge 2 ] || die "--filter needs a substring"; filter+=(--filter "$2"); shift 2 ;;
    --suite) [ $# -ge 2 ] || die "--suite needs backend, replication or all"; suite=$2; shift 2 ;;
    *) die "usage: $0 [--filter SUBSTRING] [--suite backend|replication|all]" ;;
  esac
done

started=$(date +%s)

profile=${ZFERRY_CONFORMANCE_PROFILE:-release}
case "$suite" in
  backend|replication|all) ;;
  *) die "unknown suite $suite; choose backend, replication or all" ;;
esac
case "$profile" in
  dev) profile_dir=debug ;;
  *) profile_dir=$profile ;;
esac
echo "real-zfs-test: building zferry-conformance ($profile)" >&2
(cd "$top" && cargo build --locked --profile "$profile" -p zferry-sim-tests --bin zferry-conformance)
target_dir=${CARGO_TARGET_DIR:-$top/target}
bin="$target_dir/$profile_dir/zferry-conformance"
[ -x "$bin" ] || die "the build did not produce $bin"

# One guest at a time: another session's guest is not ours to use or stop.
if "$realzfs" status >/dev/null 2>&1; then
  die "an OpenZFS guest is already running (another session?); wait for it or stop it with: $realzfs stop"
fi

# From here on the guest is ours: stop it however the script ends (a failed start included).
trap '"$realzfs" stop >/dev/null 2>&1 || true' EXIT
"$realzfs" start

"$realzfs" run "truncate -s $POOL_BYTES /var/tmp/$POOL.img && zpool create -f $POOL /var/tmp/$POOL.img" \
  || die "cannot create the pool $POOL in the guest"
"$realzfs" put "$bin" "$GUEST_BIN"

# Runs one suite in the guest; its exit status.
run_suite() {
  "$realzfs" run "ZFERRY_REAL_ZFS=1 $GUEST_BIN --pool $POOL --suite $1 ${filter[*]+$(printf '%q ' "${filter[@]}")}"
}

set +e
rc=0
if [ "$suite" != replication ]; then
  run_suite backend; rc=$?
fi
if [ "$suite" != backend ]; then
  # The replication suite starts from an empty pool: its senders list every dataset of every
  # pool, and under emulation each leftover of the backend suite makes that slower.
  if [ "$suite" = all ]; then
    "$realzfs" run "zpool destroy -f $POOL && zpool create -f $POOL /var/tmp/$POOL.img" \
      || die "cannot recreate the pool $POOL in the guest"
  fi
  run_suite replication; rc_replication=$?
  [ "$rc_replication" -gt "$rc" ] && rc=$rc_replication
fi
set -e

echo "real-zfs-test: exit $rc after $(( $(date +%s) - started )) s" >&2
exit "$rc"
