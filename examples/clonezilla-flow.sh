#!/usr/bin/env bash
# A Clonezilla-style BitTorrent deploy, end to end on one machine:
#
#   partclone.extfs -c -T          the source's used blocks as extent files + torrent.info (16 MiB sha1s)
#   blockswarm create --from-partclone   torrent.info -> extent torrent (no data read)
#   blockswarm seed --tracker-embedded   seed partclone's output directory as it is
#   blockswarm deploy  x NODES     the nodes: download, verify, write, seed each other, run --then-command
#   partclone.extfs -c -t          verify: each target's used blocks hash like the source's
#
# Run it (root is needed only for devices and loop devices):
#   npm run build && bash examples/clonezilla-flow.sh
#   SOURCE=/dev/sdb1 TARGETS="/dev/loop5 /dev/loop6" bash examples/clonezilla-flow.sh
#
# Environment, all optional:
#   SOURCE        ext2/3/4 partition or image to clone (default: a generated 64 MiB ext4 image)
#   NODES         deploy processes (default 3; with TARGETS: one per target)
#   TARGETS       space-separated targets, one per node (default: WORK/nodeN.img, made by deploy --create-image)
#   FORCE         1: pass --force to deploy (targets that hold a filesystem)
#   WORK          working directory (default: a new one under /tmp, removed at the end unless KEEP=1;
#                 a WORK you give is kept)
#   NAME          partition name, used for the torrent and partclone's directory (default: part)
#   TRACKER_PORT  embedded tracker port on 127.0.0.1 (default 26969)
#   PIECE_SIZE    piece size, e.g. 1M (default: partclone's 16 MiB, its sha1 lines used as they are)
#   PEER_PORT     BitTorrent ports: seeder PEER_PORT, node N PEER_PORT+N (default 26881)
#   SEED_IDLE     seconds a node seeds on after finishing without uploading (default 3)
#   THEN_COMMAND  what each node runs once deployed, e.g. 'reboot' (default: e2fsck -fn of its target)
#   TIMEOUT       seconds each node may take (default 600)
#   BLOCKSWARM    how to run blockswarm (default: this checkout's bin/blockswarm.js, else blockswarm on PATH)
#   PARTCLONE     partclone program for the filesystem (default partclone.extfs)
#
# Exit code: 0 when every node deployed and every target verified, else 1.
set -euo pipefail

say() { printf '%s\n' "$*"; }
die() { printf 'clonezilla-flow: %s\n' "$*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ -z ${BLOCKSWARM:-} ]]; then
  if [[ -f $here/../bin/blockswarm.js && -d $here/../dist/src ]]; then BLOCKSWARM="node $here/../bin/blockswarm.js"; else BLOCKSWARM=blockswarm; fi
fi
# shellcheck disable=SC2086 # BLOCKSWARM may be a command with arguments
bsw() { $BLOCKSWARM "$@"; }

NAME=${NAME:-part}
TRACKER_PORT=${TRACKER_PORT:-26969}
PEER_PORT=${PEER_PORT:-26881}
SEED_IDLE=${SEED_IDLE:-3}
TIMEOUT=${TIMEOUT:-600}
PARTCLONE=${PARTCLONE:-partclone.extfs}
command -v "$PARTCLONE" >/dev/null || die "$PARTCLONE is not installed (Debian: apt install partclone)"
bsw --version >/dev/null 2>&1 || die "cannot run blockswarm as '$BLOCKSWARM' (build it with npm run build, or set BLOCKSWARM)"

made_work=
if [[ -z ${WORK:-} ]]; then
  WORK=$(mktemp -d /tmp/bsw-clonezilla-XXXXXX)
  made_work=1
fi
mkdir -p "$WORK"

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ -n $made_work && ${KEEP:-0} != 1 ]]; then rm -rf "$WORK"; else say "work directory kept: $WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 0. the source: a generated ext4 image unless SOURCE names one
if [[ -z ${SOURCE:-} ]]; then
  SOURCE=$WORK/source.img
  mkdir -p "$WORK/files/etc" "$WORK/files/usr/lib"
  for i in 1 2 3 4 5 6 7 8; do head -c $((i * 3000)) /dev/urandom >"$WORK/files/etc/conf$i"; done
  for i in 1 2 3; do head -c $((6 * 1024 * 1024 + i * 12345)) /dev/urandom >"$WORK/files/usr/lib/lib$i.so"; done
  truncate -s 64M "$SOURCE"
  mkfs.ext4 -q -F -L golden -d "$WORK/files" "$SOURCE"
  say "source: generated ext4 image $SOURCE"
else
  [[ -r $SOURCE ]] || die "SOURCE $SOURCE cannot be read"
  say "source: $SOURCE"
fi

# 1. partclone: the used blocks as extent files named by their offset, and torrent.info
pcdir=$WORK/$NAME
if ! "$PARTCLONE" -c -T -s "$SOURCE" -o "$pcdir" -L "$WORK/partclone.log" >"$WORK/partclone.out" 2>&1; then
  die "$PARTCLONE -c -T could not read $SOURCE: $(tail -n 1 "$WORK/partclone.log" | sed 's/^[a-z0-9]*clone\.c: //')"
fi
say "1. $PARTCLONE -c -T: $(find "$pcdir" -type f ! -name torrent.info | wc -l) extent files in $pcdir"

# 2. the torrent: partclone's extents and 16 MiB sha1 lines (no data read), or with PIECE_SIZE
#    smaller pieces hashed from partclone's extent files (more pieces for the nodes to trade)
torrent=$WORK/$NAME.torrent
create_args=(--from-partclone "$pcdir/torrent.info" -o "$torrent" --tracker "http://127.0.0.1:$TRACKER_PORT/announce")
[[ -n ${PIECE_SIZE:-} ]] && create_args=("$pcdir" "${create_args[@]}" --piece-size "$PIECE_SIZE")
bsw create "${create_args[@]}" >"$WORK/create.out"
say "2. blockswarm create --from-partclone: $torrent ($(grep -E '^pieces' "$WORK/create.out" | tr -s ' ' | cut -d' ' -f2-) pieces)"

# 3. the seeder, serving partclone's directory, with the tracker in the same process
# (not through bsw: $! must be the seeder's own PID, not a subshell's)
# shellcheck disable=SC2086
$BLOCKSWARM seed "$torrent" "$pcdir" --tracker-embedded "$TRACKER_PORT" --bind 127.0.0.1 --port "$PEER_PORT" --log-level warn >"$WORK/seed.log" 2>&1 &
seeder=$!
pids+=("$seeder")
for _ in $(seq 300); do
  grep -q 'opentracker whitelist line' "$WORK/seed.log" && break
  kill -0 "$seeder" 2>/dev/null || die "blockswarm seed exited: $(tail -n 3 "$WORK/seed.log")"
  sleep 0.1
done
grep -q 'opentracker whitelist line' "$WORK/seed.log" || die "blockswarm seed did not start within 30 s: $(tail -n 3 "$WORK/seed.log")"
say "3. blockswarm seed --tracker-embedded $TRACKER_PORT: pid $seeder, peer port $PEER_PORT"

# 4. the nodes
if [[ -n ${TARGETS:-} ]]; then
  read -r -a targets <<<"$TARGETS"
else
  targets=()
  for i in $(seq "${NODES:-3}"); do targets+=("$WORK/node$i.img"); done
fi
then_args=()
deploy_help=$(bsw deploy --help)
if [[ $deploy_help == *--then-command* ]]; then
  default_then=
  [[ $PARTCLONE == partclone.extfs ]] && default_then='e2fsck -fn "$BLOCKSWARM_TARGET" >&2'
  then_cmd=${THEN_COMMAND-$default_then}
  [[ -n $then_cmd ]] && then_args=(--then-command "$then_cmd")
else
  say "   (this blockswarm deploy has no --then-command: the flow goes by exit codes alone)"
fi
force_args=()
[[ ${FORCE:-0} == 1 ]] && force_args=(--force)
say "4. deploying to ${#targets[@]} nodes${then_args[1]:+, then on each: ${then_args[1]}}"
node_pids=()
for i in "${!targets[@]}"; do
  n=$((i + 1))
  # shellcheck disable=SC2086
  timeout "$TIMEOUT" $BLOCKSWARM deploy "$torrent" "${targets[$i]}" --bind 127.0.0.1 --port $((PEER_PORT + n)) \
    --seed-idle "$SEED_IDLE" --create-image "${force_args[@]}" "${then_args[@]}" --progress-interval 5 >"$WORK/node$n.log" 2>&1 &
  node_pids+=($!)
  pids+=($!)
done
failed=0
for i in "${!targets[@]}"; do
  n=$((i + 1))
  code=0
  wait "${node_pids[$i]}" || code=$?
  case $code in
    0) say "   node$n ${targets[$i]}: deployed (exit 0)" ;;
    3) say "   node$n ${targets[$i]}: deployed, but its --then-command failed (exit 3)"; failed=1 ;;
    124) say "   node$n ${targets[$i]}: not done after $TIMEOUT s (TIMEOUT)"; failed=1 ;;
    *) say "   node$n ${targets[$i]}: FAILED (exit $code): $(grep -E 'FAILED|blockswarm:' "$WORK/node$n.log" | tail -n 1)"; failed=1 ;;
  esac
done
kill "$seeder" 2>/dev/null || true
wait "$seeder" 2>/dev/null || true

# 5. verify with partclone itself: the target's used blocks must hash exactly like the source's
say "5. verify: $PARTCLONE -c -t of each target against the source's torrent.info"
check_pids=()
for i in "${!targets[@]}"; do
  n=$((i + 1))
  rm -rf "$WORK/verify$n"
  "$PARTCLONE" -c -t -s "${targets[$i]}" -o "$WORK/verify$n" -L "$WORK/verify$n.log" >/dev/null 2>&1 &
  check_pids+=($!)
  pids+=($!)
done
for i in "${!targets[@]}"; do
  n=$((i + 1))
  if ! wait "${check_pids[$i]}"; then
    say "   node$n ${targets[$i]}: partclone cannot read a filesystem on it"; failed=1
  elif cmp -s "$pcdir/torrent.info" "$WORK/verify$n/torrent.info"; then
    say "   node$n ${targets[$i]}: same used blocks and sha1s as the source"
  else
    say "   node$n ${targets[$i]}: DIFFERS from the source"; failed=1
  fi
done

if [[ $failed != 0 ]]; then
  say "clonezilla-flow: FAILED (logs: $WORK/node*.log; KEEP=1 keeps them)"
  exit 1
fi
say "all ${#targets[@]} nodes hold $NAME"
