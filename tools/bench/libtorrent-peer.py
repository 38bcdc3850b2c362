#!/usr/bin/python3
"""The reference peer of bench:transfer and bench:swarm: libtorrent (Debian's
python3-libtorrent, the standard C++ client) in file mode, one file per extent.

  libtorrent-peer.py [OPTIONS] seed  TORRENT SAVE PORT          seed from SAVE (trusted) until killed
  libtorrent-peer.py [OPTIONS] leech TORRENT SAVE PORT PEER...  download into SAVE, fsync every file, exit 0

Options (all off by default, which is what bench:transfer runs):
  --bind ADDR            listen on ADDR (default 127.0.0.1); outgoing connections follow the routes
  --max-connections N    connections_limit of the session and max_connections of the torrent
  --max-uploads N        unchoke_slots_limit of the session and max_uploads of the torrent (-1: unlimited)
  --ezio                 the session settings EZIO's daemon sets on top of libtorrent's defaults
                         (no encryption, TCP preferred, read-cache suggestions, its disk and send buffers);
                         a seed also trusts every piece at once, as EZIO's seeding mode does (no lazy hashing)
  --wait-announce        print the ready line only after the first tracker reply (the torrent's trackers)
  --keep-seeding         leech: after the done line, keep seeding until killed (SIGTERM)

Prints one JSON line when listening ({"ready": true}) and, for leech, one when
done: {"done": true, "seconds": S, "at": T, ...} with S from the torrent's add
to the last fsync (the same "verified and on the disk" point at which
`blockswarm deploy` finishes) and T that moment as Unix time in seconds.
Waits on libtorrent's alerts (status looked at twice a second at most)
rather than polling, so the CPU it uses is libtorrent's, not a loop's.
Alerts of the error category go to stderr; a torrent error while it waits
(for the first announce or for the download) ends it with exit status 2.
Run with /usr/bin/python3 (pyenv's python has no libtorrent).
"""
import argparse
import json
import os
import sys
import time

import libtorrent as lt

# How long one wait for an alert lasts before the torrent's status is looked at anyway (ms).
WAKE_MS = 500


def parse_args():
    ap = argparse.ArgumentParser(description='libtorrent reference peer for the blockswarm benchmarks')
    ap.add_argument('--bind', default='127.0.0.1')
    ap.add_argument('--max-connections', type=int)
    ap.add_argument('--max-uploads', type=int)
    ap.add_argument('--ezio', action='store_true')
    ap.add_argument('--wait-announce', action='store_true')
    ap.add_argument('--keep-seeding', action='store_true')
    # started before the clock (bench:swarm --daemons): print {"armed": true}, add the torrent once a line comes on stdin
    ap.add_argument('--go-on-stdin', action='store_true')
    ap.add_argument('mode', choices=['seed', 'leech'])
    ap.add_argument('torrent')
    ap.add_argument('save')
    ap.add_argument('port', type=int)
    ap.add_argument('peers', nargs='*')
    return ap.parse_args()


def session_settings(args):
    settings = {
        'listen_interfaces': '%s:%d' % (args.bind, args.port),
        'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
        'allow_multiple_connections_per_ip': True,
        # TCP like blockswarm: libtorrent prefers uTP, which moves ~6 MB/s over loopback
        'enable_outgoing_utp': False, 'enable_incoming_utp': False,
        'alert_mask': lt.alert_category.error | lt.alert_category.status | lt.alert_category.tracker,
    }
    if args.ezio:
        # What EZIO's app.cpp (make_session_params) changes, except its thread counts and
        # cache size (those belong to its raw-disk storage; blockswarm's defaults are not EZIO's either).
        settings.update({
            'in_enc_policy': int(lt.enc_policy.disabled), 'out_enc_policy': int(lt.enc_policy.disabled),
            'mixed_mode_algorithm': int(lt.bandwidth_mixed_algo_t.prefer_tcp),
            'suggest_mode': int(lt.suggest_mode_t.suggest_read_cache),
            'max_queued_disk_bytes': 128 * 1024 * 1024,
            'send_not_sent_low_watermark': 512 * 1024,
            'send_buffer_watermark': 128 * 1024 * 1024,
            'send_buffer_low_watermark': 32 * 1024 * 1024,
        })
    if args.max_connections is not None:
        settings['connections_limit'] = args.max_connections
    if args.max_uploads is not None:
        settings['unchoke_slots_limit'] = args.max_uploads
    return settings


def report(alert):
    """Error-category alerts to stderr; True when the torrent itself failed."""
    name = type(alert).__name__
    if alert.category() & lt.alert_category.error:
        print(json.dumps({'alert': name, 'message': alert.message()}), file=sys.stderr, flush=True)
    return name in ('torrent_error_alert', 'file_error_alert')


def wait_for(ses, stop_at, done):
    """Pop alerts until `stop_at(alert)` holds for one or `done()` holds; False if the torrent failed."""
    while not done():
        if ses.wait_for_alert(WAKE_MS) is None:
            continue
        for a in ses.pop_alerts():
            if report(a):
                return False
            if stop_at(a):
                return True
    return True


def fsync_files(ti, save):
    files = ti.files()
    for i in range(files.num_files()):
        fd = os.open(os.path.join(save, files.file_path(i)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def serve_forever():
    while True:
        time.sleep(3600)


def main():
    args = parse_args()
    ses = lt.session(session_settings(args))
    p = lt.add_torrent_params()
    p.ti = lt.torrent_info(args.torrent)
    p.save_path = args.save
    if args.max_connections is not None:
        p.max_connections = args.max_connections
    if args.max_uploads is not None:
        p.max_uploads = args.max_uploads
    if args.mode == 'seed':
        p.flags |= lt.torrent_flags.seed_mode
        if args.ezio:
            p.verified_pieces = [True] * p.ti.num_pieces()
    if args.go_on_stdin:
        print(json.dumps({'armed': True}), flush=True)
        sys.stdin.readline()
    started = time.monotonic()
    h = ses.add_torrent(p)
    for peer in args.peers:
        host, pt = peer.rsplit(':', 1)
        h.connect_peer((host, int(pt)))
    if args.wait_announce and not wait_for(ses, lambda a: type(a).__name__ == 'tracker_reply_alert', lambda: False):
        sys.exit(2)
    print(json.dumps({'ready': True}), flush=True)
    if args.mode == 'seed':
        serve_forever()
    if not wait_for(ses, lambda a: type(a).__name__ == 'torrent_finished_alert', lambda: h.status().is_seeding):
        sys.exit(2)
    fsync_files(p.ti, args.save)
    s = h.status()
    print(json.dumps({'done': True, 'seconds': time.monotonic() - started, 'at': time.time(),
                      'bytes': s.total_wanted_done, 'failed': s.total_failed_bytes}), flush=True)
    if args.keep_seeding:
        serve_forever()


main()
