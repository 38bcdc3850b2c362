#!/bin/sh
# A Tinkerbell action that deploys a disk image with blockswarm: the node
# downloads the image's used blocks over BitTorrent from the seeder and from
# the other nodes, verifies every piece, writes it to DEST_DISK, seeds it on
# to the others for a while, and exits 0 only if DEST_DISK holds the image.
#
# In a Tinkerbell template (the image built from the Dockerfile next to this):
#   actions:
#     - name: deploy-image
#       image: registry.local/blockswarm-action:latest
#       timeout: 1800
#       environment:
#         TORRENT_URL: http://10.0.0.1:8080/golden.torrent
#         DEST_DISK: /dev/sda
#         SEED_IDLE: "60"
#
# Run it by hand (what the tests do):
#   TORRENT_PATH=golden.torrent DEST_DISK=/dev/loop7 PEERS=127.0.0.1:6881 \
#     BLOCKSWARM="node $PWD/bin/blockswarm.js" sh examples/tinkerbell-action/entrypoint.sh
#
# Environment in:
#   DEST_DISK     required: the block device to write (or an image file), e.g. /dev/sda
#   TORRENT_URL   the .torrent, fetched over HTTP(S) with curl or wget; or
#   TORRENT_PATH  the .torrent as a file in the container (give one of the two)
#   PEERS         peers to connect to besides the torrent's trackers: host:port, separated by commas or spaces
#   SEED_IDLE     seconds to go on seeding, once done, after the last upload (default 30)
#   SEED_RATIO    also stop seeding once uploaded this many times the image (default: off)
#   BT_PORT       BitTorrent listen port (default 6881)
#   BIND          local address to listen on and connect from (default: all)
#   FORCE         true: write DEST_DISK even if it holds a filesystem or looks in use
#   CREATE_IMAGE  true: DEST_DISK is an image file, created if missing (for tests)
#   BLOCKSWARM    how to run blockswarm (default: blockswarm on PATH)
# Exit code out: 0 deployed and verified; 2 bad environment (the message says
# which variable); otherwise blockswarm deploy's (1 not deployed, 130/143 stopped).
set -u

fail() {
  echo "blockswarm-action: $*" >&2
  exit 2
}

BLOCKSWARM=${BLOCKSWARM:-blockswarm}
[ -n "${DEST_DISK:-}" ] || fail "DEST_DISK is not set: name the block device to write, e.g. DEST_DISK=/dev/sda"
if [ "${CREATE_IMAGE:-}" != true ] && [ ! -e "$DEST_DISK" ]; then
  fail "DEST_DISK=$DEST_DISK does not exist (is the disk attached, and /dev passed to the action?)"
fi
[ -z "${TRACKER:-}" ] || fail "TRACKER is not supported: blockswarm deploy announces to the trackers in the torrent (blockswarm create --tracker URL); give extra peers in PEERS"
if [ -n "${TORRENT_URL:-}" ] && [ -n "${TORRENT_PATH:-}" ]; then fail "give TORRENT_URL or TORRENT_PATH, not both"; fi

fetched=
cleanup() { [ -z "$fetched" ] || rm -f "$fetched"; }
trap cleanup EXIT
if [ -n "${TORRENT_URL:-}" ]; then
  fetched=$(mktemp "${TMPDIR:-/tmp}/blockswarm-action.XXXXXX") || fail "cannot create a temporary file in ${TMPDIR:-/tmp}"
  if command -v curl >/dev/null; then
    curl -fsSL --retry 5 --retry-delay 2 -o "$fetched" "$TORRENT_URL" || fail "cannot fetch TORRENT_URL=$TORRENT_URL (curl exit $?)"
  elif command -v wget >/dev/null; then
    wget -q -t 5 -O "$fetched" "$TORRENT_URL" || fail "cannot fetch TORRENT_URL=$TORRENT_URL (wget exit $?)"
  else
    fail "TORRENT_URL needs curl or wget in the image"
  fi
  torrent=$fetched
elif [ -n "${TORRENT_PATH:-}" ]; then
  [ -r "$TORRENT_PATH" ] || fail "TORRENT_PATH=$TORRENT_PATH cannot be read"
  torrent=$TORRENT_PATH
else
  fail "neither TORRENT_URL nor TORRENT_PATH is set: give the .torrent to deploy"
fi

set -- deploy "$torrent" "$DEST_DISK" --port "${BT_PORT:-6881}" --seed-idle "${SEED_IDLE:-30}" --progress-interval 10
[ -z "${SEED_RATIO:-}" ] || set -- "$@" --seed-ratio "$SEED_RATIO"
[ -z "${BIND:-}" ] || set -- "$@" --bind "$BIND"
[ "${FORCE:-}" != true ] || set -- "$@" --force
[ "${CREATE_IMAGE:-}" != true ] || set -- "$@" --create-image
for peer in $(echo "${PEERS:-}" | tr ',' ' '); do set -- "$@" --peer "$peer"; done

echo "blockswarm-action: deploying ${TORRENT_URL:-$TORRENT_PATH} to $DEST_DISK"
# deploy runs as a child (not exec) so that the fetched torrent is removed after;
# a stop signal is passed on, and deploy stops gracefully (target flushed)
# shellcheck disable=SC2086 # BLOCKSWARM may be a command with arguments
$BLOCKSWARM "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
wait "$child"
code=$?
# a trapped signal interrupts the first wait: wait again for deploy's own exit code
if kill -0 "$child" 2>/dev/null; then
  wait "$child"
  code=$?
fi
exit "$code"
