#!/usr/bin/env bash
# shellcheck disable=SC2016,SC1091 # backticks are Markdown; os-release is the guest's
# scripts/capture-fixtures.sh
#
# Re-captures the real-OpenZFS fixtures:
#   core/tests/fixtures/resume_tokens/   resume tokens of interrupted receives
#   zfs-cli-backend/tests/fixtures/      stdout/stderr/exit status of zfs commands
#
# Runs on the host: starts the guest with scripts/realzfs.sh if it is not
# running (and stops it again afterwards), copies this script into the guest,
# runs its `guest` half there, and unpacks the tar stream it prints. The guest
# half makes file-backed pools (`tank`, 1 GiB; `small`, 64 MiB) and must start
# from a guest without pools. GUIDs, txgs, times and tokens differ on every run.
set -euo pipefail

RT_DIR=core/tests/fixtures/resume_tokens
CLI_DIR=zfs-cli-backend/tests/fixtures

host() {
  local top realzfs tmp started=0
  top=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
  realzfs=$top/scripts/realzfs.sh
  if ! "$realzfs" status >/dev/null 2>&1; then
    "$realzfs" start
    started=1
  fi
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: the values are fixed
  trap "rm -rf '$tmp'; [ $started = 0 ] || '$realzfs' stop" EXIT
  "$realzfs" put "${BASH_SOURCE[0]}" /root/capture-fixtures.sh
  "$realzfs" run 'bash /root/capture-fixtures.sh guest' | tar -C "$tmp" -xf -
  if [ ! -f "$tmp/resume_tokens/README.md" ] || [ ! -f "$tmp/cli/README.md" ]; then
    echo "capture-fixtures: the guest returned no fixtures" >&2; exit 1
  fi
  # Replace only the files this script makes, so hand-written fixtures stay.
  mkdir -p "$top/$RT_DIR" "$top/$CLI_DIR"
  find "$top/$RT_DIR" -maxdepth 1 -type f \
    \( -name '*.token' -o -name '*.nvt.txt' -o -name '*.meta.txt' -o -name README.md \) -delete
  find "$top/$CLI_DIR" -maxdepth 1 -type f \( -name '*.cmd' -o -name '*.stdout' -o -name '*.stderr' \
    -o -name '*.status' -o -name '*.stdin' -o -name README.md \) -delete
  cp "$tmp"/resume_tokens/* "$top/$RT_DIR/"
  cp "$tmp"/cli/* "$top/$CLI_DIR/"
  echo "capture-fixtures: wrote $(find "$tmp/resume_tokens" -type f | wc -l) files to $RT_DIR" \
    "and $(find "$tmp/cli" -type f | wc -l) files to $CLI_DIR" >&2
}

# ---------------------------------------------------------------------------
# Everything below runs inside the guest, as root. Progress goes to stderr;
# stdout carries only the final tar stream.

FX=/root/fx
RT=$FX/resume_tokens
CLI=$FX/cli
KEY=/root/zferry.key
CUT=1M       # bytes of a stream fed to an interrupted `zfs recv -s`
FILE_MIB=4   # size of each random file written before a snapshot

die() { echo "capture-fixtures (guest): $*" >&2; exit 1; }
log() { echo "== $*" >&2; }
q() { printf '%q ' "$@" | sed 's/ $//'; }   # a command line a shell can re-run
hex() { python3 -c 'import sys; print("0x%016x" % int(sys.argv[1]))' "$1"; }
guid() { zfs get -H -p -o value guid "$1"; }
mnt() { zfs get -H -o value mountpoint "$1"; }
fill() { x dd if=/dev/urandom of="$(mnt "$1")/$2" bs=1M count="${3:-$FILE_MIB}" status=none; }

# cap CASE DESCRIPTION ARGV... : runs ARGV and records CASE.{cmd,stdout,stderr,status}.
# With IN=FILE IN_DESC=TEXT in the environment, stdin comes from FILE and
# CASE.stdin says what it was; otherwise stdin is /dev/null.
cap() {
  local case=$1 desc=$2 rc; shift 2
  printf '%s\n' "$@" > "$CLI/$case.cmd"
  if "$@" < "${IN:-/dev/null}" > "$CLI/$case.stdout" 2> "$CLI/$case.stderr"; then rc=0; else rc=$?; fi
  echo "$rc" > "$CLI/$case.status"
  [ -z "${IN:-}" ] || echo "${IN_DESC:?IN needs IN_DESC}" > "$CLI/$case.stdin"
  printf '| `%s` | %s | %s |\n' "$case" "$desc" "$rc" >> "$FX/cli-index"
  log "$case: exit $rc"
}

# nvt TOKEN OUT : writes `zfs send -nvt TOKEN`'s stdout then its stderr to OUT,
# says in /var/tmp/nvt.streams which lines came from which, prints the exit status.
nvt() {
  local rc o e
  if zfs send -nvt "$1" > /var/tmp/nvt.out 2> /var/tmp/nvt.err; then rc=0; else rc=$?; fi
  cat /var/tmp/nvt.out /var/tmp/nvt.err > "$2"
  o=$(wc -l < /var/tmp/nvt.out); e=$(wc -l < /var/tmp/nvt.err)
  echo "the first $o lines from stdout, then $e lines from stderr" > /var/tmp/nvt.streams
  echo "$rc"
}

# cut_recv STREAM TARGET : feeds the first $CUT bytes of STREAM to `zfs recv -s TARGET`.
cut_recv() {
  if head -c "$CUT" "$1" | zfs recv -s "$2" 2> /var/tmp/cut_recv.err; then
    die "recv of a cut stream into $2 succeeded"
  fi
}

# Commands that prepared the current token cases, in order, as shell lines.
SETUP=""
x() { SETUP+="$(q "$@")"$'\n'; "$@"; }
# xpipe SEND_ARGS... -- RECV_ARGS... : zfs send | zfs recv, recorded in SETUP.
xpipe() {
  local send=()
  while [ "$1" != -- ]; do send+=("$1"); shift; done
  shift
  SETUP+="$(q zfs send "${send[@]}") | $(q zfs recv "$@")"$'\n'
  zfs send "${send[@]}" | zfs recv "$@"
}

# token_case CASE DESC SENDER FROM TO TARGET SEND_ARGS...
#   SENDER: sending dataset; FROM/TO: full names of the from version ("-" for a
#   full send) and the to snapshot; TARGET: receiving dataset.
token_case() {
  local case=$1 desc=$2 sender=$3 from=$4 to=$5 target=$6 stream token rc size
  shift 6
  stream=/var/tmp/$case.stream
  zfs send "$@" > "$stream"
  size=$(stat -c %s "$stream")
  cut_recv "$stream" "$target"
  token=$(zfs get -H -p -o value receive_resume_token "$target")
  if [ -z "$token" ] || [ "$token" = - ]; then die "$case: no receive_resume_token on $target"; fi
  printf '%s' "$token" > "$RT/$case.token"
  rc=$(nvt "$token" "$RT/$case.nvt.txt")
  {
    echo "case: $case"
    echo "what: $desc"
    echo "sending dataset: $sender"
    if [ "$from" = - ]; then
      echo "from: - (full send)"
    else
      echo "from: $from"
      echo "from guid: $(guid "$from") $(hex "$(guid "$from")")"
    fi
    echo "to: $to"
    echo "to guid: $(guid "$to") $(hex "$(guid "$to")")"
    echo "receiving dataset: $target"
    echo "stream bytes: $size, fed to recv: $CUT"
    echo "zfs send -nvt exit status: $rc ($case.nvt.txt: $(cat /var/tmp/nvt.streams))"
    echo "commands (after the pool and key file were made, see README.md):"
    printf '%s' "$SETUP" | sed 's/^/  /'
    echo "  $(q zfs send "$@") > $(q "$stream")"
    echo "  head -c $CUT $(q "$stream") | $(q zfs recv -s "$target")"
    echo "  TOKEN=\$(zfs get -H -p -o value receive_resume_token $(q "$target"))"
    echo "  zfs send -nvt \"\$TOKEN\""
    echo "recv stderr:"
    sed 's/^/  /' /var/tmp/cut_recv.err
  } > "$RT/$case.meta.txt"
  # Prove that the token really resumes; the meta file records the outcome.
  if zfs send -t "$token" | zfs recv -s "$target" 2> /var/tmp/resume.err; then
    [ "$(guid "$to")" = "$(guid "$target@${to#*@}")" ] || die "$case: resumed snapshot has another guid"
    echo "resume check: zfs send -t \"\$TOKEN\" | zfs recv -s $(q "$target") completed, guid matches" >> "$RT/$case.meta.txt"
  else
    die "$case: resuming with the token failed: $(cat /var/tmp/resume.err)"
  fi
  rm -f "$stream"
  printf '| `%s` | %s |\n' "$case" "$desc" >> "$FX/rt-index"
  log "$case: token of ${#token} chars"
}

guest() {
  export LC_ALL=C
  modprobe zfs
  [ -z "$(zpool list -H -o name)" ] || die "the guest already has pools; restart it: scripts/realzfs.sh stop && scripts/realzfs.sh start"
  rm -rf "$FX"; mkdir -p "$RT" "$CLI"
  : > "$FX/cli-index"; : > "$FX/rt-index"
  truncate -s 1G /var/tmp/v && zpool create tank /var/tmp/v
  head -c 32 /dev/urandom > "$KEY"
  local enc_opts=(-o encryption=aes-256-gcm -o keyformat=raw -o "keylocation=file://$KEY")
  resume_tokens
  cli_outputs
  write_readmes
  log "done"
  tar -C "$FX" -cf - resume_tokens cli >&3
}

resume_tokens() {
  local S="tank/with space" E="tank/enc src" B="tank/bm src"

  log "resume tokens: full, incremental"
  SETUP=""
  x zfs create "$S"; fill "$S" f1; x zfs snapshot "$S@full 1"
  fill "$S" f2; x zfs snapshot "$S@incr 2"
  token_case full "full send" "$S" - "$S@full 1" "tank/recv full" \
    "$S@full 1"
  token_case full_lec "full send with -L -e -c (large blocks, embedded, compressed)" "$S" - "$S@full 1" \
    "tank/recv lec" -L -e -c "$S@full 1"
  xpipe "$S@full 1" -- "tank/recv incr"
  token_case incremental "incremental send -i" "$S" "$S@full 1" "$S@incr 2" "tank/recv incr" \
    -i "@full 1" "$S@incr 2"

  log "resume tokens: raw (encrypted)"
  SETUP=""
  x zfs create "${enc_opts[@]}" "$E"; fill "$E" f1; x zfs snapshot "$E@r1"
  fill "$E" f2; x zfs snapshot "$E@r2"
  token_case raw_full "raw full send -w of an aes-256-gcm dataset" "$E" - "$E@r1" "tank/raw full" \
    -w "$E@r1"
  xpipe -w "$E@r1" -- "tank/raw incr"
  token_case raw_incremental "raw incremental send -w -i" "$E" "$E@r1" "$E@r2" "tank/raw incr" \
    -w -i @r1 "$E@r2"

  log "resume tokens: from a bookmark"
  SETUP=""
  x zfs create "$B"; fill "$B" f1; x zfs snapshot "$B@b1"
  xpipe "$B@b1" -- "tank/recv bm"
  x zfs bookmark "$B@b1" "$B#b1 mark"
  x zfs destroy "$B@b1"   # so that resuming must use the bookmark
  fill "$B" f2; x zfs snapshot "$B@b2"
  token_case bookmark "incremental send from a bookmark (its snapshot destroyed)" "$B" "$B#b1 mark" "$B@b2" \
    "tank/recv bm" -i "#b1 mark" "$B@b2"

  log "resume tokens: corrupted and truncated"
  local good bad pos digit flipped rc
  good=$(cat "$RT/full.token")
  # Token layout: version-checksum-length-payload. Flip a digit 20 characters
  # into the payload.
  pos=$(( $(cut -d- -f1-3 <<<"$good" | wc -c) + 20 ))
  digit=${good:pos:1}
  flipped=$(printf '%x' $(( (16#$digit + 1) % 16 )))
  bad=${good:0:pos}$flipped${good:pos+1}
  printf '%s' "$bad" > "$RT/corrupt.token"
  rc=$(nvt "$bad" "$RT/corrupt.nvt.txt")
  {
    echo "case: corrupt"
    echo "what: full.token with one hex digit of the payload changed"
    echo "changed: character index $pos (0-based) of the token, '$digit' -> '$flipped'"
    echo "sending dataset: $S (from the full case)"
    echo "zfs send -nvt exit status: $rc (corrupt.nvt.txt: $(cat /var/tmp/nvt.streams))"
  } > "$RT/corrupt.meta.txt"
  printf '| `%s` | %s |\n' corrupt "full.token with one payload hex digit changed" >> "$FX/rt-index"
  bad=${good:0:${#good}-10}
  printf '%s' "$bad" > "$RT/truncated.token"
  rc=$(nvt "$bad" "$RT/truncated.nvt.txt")
  {
    echo "case: truncated"
    echo "what: full.token without its last 10 characters"
    echo "sending dataset: $S (from the full case)"
    echo "zfs send -nvt exit status: $rc (truncated.nvt.txt: $(cat /var/tmp/nvt.streams))"
  } > "$RT/truncated.meta.txt"
  printf '| `%s` | %s |\n' truncated "full.token without its last 10 characters" >> "$FX/rt-index"
}

cli_outputs() {
  local L="tank/list me" D="tank/destroy me" R="tank/rsrc" token
  local tags=("zferry keep A" "zferry keep B")

  log "cli: listing"
  zfs create "$L"; zfs create "$L/child"
  zfs snapshot "$L@a"; zfs bookmark "$L@a" "$L#a"
  fill "$L" f1 1; zfs snapshot "$L@b"; zfs bookmark "$L@b" "$L#b mark"
  zfs hold "${tags[0]}" "$L@b"; zfs hold "${tags[1]}" "$L@b"
  zfs snapshot "$L@gone"; zfs bookmark "$L@gone" "$L#gone"; zfs destroy "$L@gone"
  fill "$L" f2 1; zfs snapshot "$L@c with space"; zfs hold keep "$L@c with space"
  zfs snapshot "$L/child@x"
  cap list_versions "snapshots, bookmarks (one whose snapshot is gone), holds (userrefs), a child left out by -d 1" \
    zfs list -H -p -o name,guid,createtxg,creation,userrefs -r -d 1 -t bookmark,snapshot -s createtxg "$L"
  cap list_versions_missing "same listing on a dataset that does not exist" \
    zfs list -H -p -o name,guid,createtxg,creation,userrefs -r -d 1 -t bookmark,snapshot -s createtxg tank/missing
  zfs create tank/empty
  cap list_versions_empty "same listing on a dataset without snapshots or bookmarks" \
    zfs list -H -p -o name,guid,createtxg,creation,userrefs -r -d 1 -t bookmark,snapshot -s createtxg tank/empty
  zfs create -V 16M "tank/vol one"; zfs create -p "tank/a b/c d"
  cap list_datasets "filesystems and a volume, names with spaces" \
    zfs list -H -p -o name -r -t filesystem,volume tank

  log "cli: properties"
  zfs create "tank/props parent"; zfs create "tank/props parent/kid"
  zfs set "zferry:note=set here" "tank/props parent"
  zfs set zferry:own=kid "tank/props parent/kid"

  log "cli: holds"
  cap holds "two tags with spaces" zfs holds -H "$L@b"
  cap holds_none "snapshot without holds" zfs holds -H "$L@a"
  cap hold_exists "hold with a tag that is already held" zfs hold "${tags[0]}" "$L@b"
  cap hold_missing_snapshot "hold on a snapshot that does not exist" zfs hold t "$L@nosuch"
  cap release_missing "release of a tag that is not held" zfs release "no such tag" "$L@b"

  log "cli: bookmarks"
  cap bookmark_exists_same "bookmark exists, made from the same snapshot" zfs bookmark "$L@a" "$L#a"
  cap bookmark_exists_other "bookmark exists, made from another snapshot" zfs bookmark "$L@b" "$L#a"
  cap bookmark_missing_snapshot "bookmark of a snapshot that does not exist" zfs bookmark "$L@nosuch" "$L#new"

  log "cli: destroy"
  zfs create "$D"; zfs snapshot "$D@a"; zfs snapshot "$D@b"; zfs snapshot "$D@c"
  zfs hold held "$D@b"
  cap destroy_held_in_list "destroy @a,b,c where b is held" zfs destroy "$D@a,b,c"
  cap destroy_held_in_list_after "snapshots left after destroy_held_in_list" \
    zfs list -H -p -o name,userrefs -t snapshot -r "$D"
  cap destroy_missing_snapshot "destroy of a snapshot that does not exist" zfs destroy "$D@nosuch"
  cap destroy_missing_bookmark "destroy of a bookmark that does not exist" zfs destroy "$D#nosuch"
  cap destroy_missing_dataset "destroy of a dataset that does not exist" zfs destroy tank/nosuch
  cap destroy_missing_in_list "destroy @a,nosuch: a exists and is not held, nosuch does not exist" \
    zfs destroy "$D@a,nosuch"
  cap destroy_missing_in_list_after "snapshots left after destroy_missing_in_list" \
    zfs list -H -p -o name,userrefs -t snapshot -r "$D"

  log "cli: send dry runs"
  cap send_dry_full "full" zfs send -n -v -P "$L@a"
  cap send_dry_incremental "incremental -i" zfs send -n -v -P -i "$L@a" "$L@b"
  cap send_dry_range "range -I" zfs send -n -v -P -I "$L@a" "$L@c with space"
  cap send_dry_from_bookmark "incremental from a bookmark" zfs send -n -v -P -i "$L#b mark" "$L@c with space"
  cap send_dry_missing "snapshot does not exist" zfs send -n -v -P "$L@nosuch"

  log "cli: receive"
  zfs create "$R"; fill "$R" f1 1; zfs snapshot "$R@1"; fill "$R" f2 1; zfs snapshot "$R@2"
  zfs send "$R@1" > /var/tmp/r1.full
  zfs send -i @1 "$R@2" > /var/tmp/r12.incr
  zfs recv tank/rdst < /var/tmp/r1.full
  echo modified > "$(mnt tank/rdst)/new"
  IN=/var/tmp/r12.incr IN_DESC="zfs send -i @1 $R@2" \
    cap recv_incremental_modified_target "incremental onto a target written to since @1, no -F" \
    zfs recv tank/rdst
  IN=/var/tmp/r1.full IN_DESC="zfs send $R@1" \
    cap recv_full_onto_existing "full stream onto an existing dataset, no -F" zfs recv tank/rdst
  zfs recv tank/rnewer < /var/tmp/r1.full
  echo diverged > "$(mnt tank/rnewer)/new"; zfs snapshot tank/rnewer@newer
  IN=/var/tmp/r12.incr IN_DESC="zfs send -i @1 $R@2" \
    cap recv_incremental_target_has_newer "incremental onto a target with a newer snapshot @newer holding other data, no -F" \
    zfs recv tank/rnewer
  zfs recv tank/rnoop < /var/tmp/r1.full; zfs snapshot tank/rnoop@noop
  IN=/var/tmp/r12.incr IN_DESC="zfs send -i @1 $R@2" \
    cap recv_incremental_target_has_noop_newer "incremental onto a target with a newer snapshot @noop without changes since @1, no -F (accepted for non-raw streams)" \
    zfs recv tank/rnoop
  cap recv_incremental_target_has_noop_newer_after "snapshots of the target after recv_incremental_target_has_noop_newer" \
    zfs list -H -p -o name,guid,createtxg -t snapshot -s createtxg -r tank/rnoop
  zfs create tank/rnobase
  IN=/var/tmp/r12.incr IN_DESC="zfs send -i @1 $R@2" \
    cap recv_incremental_missing_base "incremental onto a target that lacks @1" zfs recv tank/rnobase
  zfs create "${enc_opts[@]}" "tank/enc target"
  IN=/var/tmp/r1.full IN_DESC="zfs send $R@1 (unencrypted)" \
    cap recv_force_unencrypted_onto_encrypted "recv -F of an unencrypted full stream onto an encrypted dataset" \
    zfs recv -F "tank/enc target"
  cap recv_abort_no_state "recv -A on a dataset without partial receive state" zfs recv -A tank/rdst
  head -c "$CUT" /var/tmp/r1.full > /var/tmp/r1.cut
  IN=/var/tmp/r1.cut IN_DESC="first $CUT bytes of zfs send $R@1" \
    cap recv_interrupted "recv -s of a cut stream (partial state kept, resume hint)" zfs recv -s tank/rpart
  token=$(zfs get -H -p -o value receive_resume_token tank/rpart)
  cap send_dry_token "dry run of the resume token left by recv_interrupted" zfs send -n -v -P -t "$token"
  cap recv_abort "recv -A with partial receive state (after recv_interrupted)" zfs recv -A tank/rpart
  # Make the partial state again for get_props.
  zfs recv -s tank/rpart < /var/tmp/r1.cut 2>/dev/null && die "recv of a cut stream succeeded"

  cap get_props "local and inherited user properties, unset user property, receive_resume_token" \
    zfs get -Hp -o name,property,value,source \
    guid,createtxg,zferry:note,zferry:own,zferry:absent,receive_resume_token,encryption,keystatus,compression \
    "tank/props parent" "tank/props parent/kid" tank/rpart "tank/enc target"
  cap get_props_missing "zfs get on a dataset that does not exist" \
    zfs get -Hp -o name,property,value,source guid,receive_resume_token tank/nosuch

  log "cli: ENOSPC"
  truncate -s 64M /var/tmp/small && zpool create small /var/tmp/small
  zfs create tank/big; fill tank/big f 96; zfs snapshot tank/big@s
  zfs send tank/big@s > /var/tmp/big.full
  IN=/var/tmp/big.full IN_DESC="zfs send tank/big@s (96 MiB of random data) into a 64 MiB pool" \
    cap recv_enospc "receive onto a full pool" zfs recv small/dst
  IN=/var/tmp/big.full IN_DESC="zfs send tank/big@s (96 MiB of random data) into a 64 MiB pool" \
    cap recv_enospc_resumable "receive -s onto a full pool" zfs recv -s small/dsts
  cap recv_enospc_resumable_token "is a resume token left after recv_enospc_resumable?" \
    zfs get -Hp -o name,property,value,source receive_resume_token small/dsts
  rm -f /var/tmp/big.full

  log "cli: usage texts and versions"
  cap usage_send "zfs send without arguments" zfs send
  cap usage_receive "zfs receive without arguments" zfs receive
  cap usage_destroy "zfs destroy without arguments" zfs destroy
  cap usage_load_key "zfs load-key without arguments" zfs load-key
  cap zpool_get_feature "feature flag value" zpool get -H -p -o value feature@extensible_dataset tank
  cap zpool_get_feature_missing_pool "feature flag value of a pool that does not exist" \
    zpool get -H -p -o value feature@extensible_dataset nosuchpool
  cap version "zfs version" zfs version
}

write_readmes() {
  local origin
  origin=$(printf '%s\n' \
    "Captured from real OpenZFS by \`scripts/capture-fixtures.sh\` (it runs inside the" \
    "QEMU guest of \`scripts/realzfs.sh\`; re-run it to recapture). GUIDs, txgs," \
    "times and tokens change on every capture." \
    "" \
    "- OpenZFS: $(zfs version | paste -sd' ' | sed 's/ /, /')" \
    "- guest kernel: $(uname -r) ($(. /etc/os-release; echo "$PRETTY_NAME"))" \
    "- captured: $(date -u '+%Y-%m-%d %H:%M UTC')" \
    "- pool: \`tank\`, one 1 GiB file vdev (\`truncate -s 1G /var/tmp/v && zpool create tank /var/tmp/v\`)," \
    "  default properties; \`LC_ALL=C\`" \
    "- encrypted datasets: aes-256-gcm, \`keyformat=raw\`, key made by \`head -c 32 /dev/urandom > $KEY\`")
  {
    echo "# Resume tokens from real OpenZFS"
    echo
    echo "$origin"
    echo
    echo "Each case interrupts a \`zfs recv -s\` by feeding it only the first $CUT of a"
    echo "stream (random ${FILE_MIB} MiB files per snapshot), then reads the token with"
    echo "\`zfs get -H -p -o value receive_resume_token\`."
    echo
    echo "- \`CASE.token\`: the token text exactly (no newline)"
    echo "- \`CASE.nvt.txt\`: \`zfs send -nvt TOKEN\` run on the sending side: its stdout, then its"
    echo "  stderr (the meta file says which lines came from which)"
    echo "- \`CASE.meta.txt\`: sending dataset, from/to names and GUIDs (decimal and hex),"
    echo "  the commands, and whether resuming with the token then completed"
    echo
    echo "| case | what |"
    echo "| --- | --- |"
    cat "$FX/rt-index"
  } > "$RT/README.md"
  {
    echo "# \`zfs\`/\`zpool\` command outputs from real OpenZFS"
    echo
    echo "$origin"
    echo
    echo "One case per name:"
    echo
    echo "- \`CASE.cmd\`: the argv, one argument per line (no shell quoting)"
    echo "- \`CASE.stdout\`, \`CASE.stderr\`: the output streams, byte for byte"
    echo "- \`CASE.status\`: the exit status"
    echo "- \`CASE.stdin\` (only when stdin was not /dev/null): what was fed on stdin"
    echo
    echo "| case | what | exit |"
    echo "| --- | --- | --- |"
    cat "$FX/cli-index"
  } > "$CLI/README.md"
}

case "${1:-}" in
  guest) exec 3>&1 1>&2; guest ;;
  "") host ;;
  *) echo "usage: $0   (the 'guest' argument is for the guest half)" >&2; exit 2 ;;
esac
