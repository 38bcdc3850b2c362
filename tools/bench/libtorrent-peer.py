#!/usr/bin/python3
"""The reference peer of bench:transfer: libtorrent (Debian's python3-libtorrent,
the standard C++ client) in file mode, one file per extent.

  libtorrent-peer.py seed  TORRENT SAVE PORT          seed from SAVE (trusted) until killed
  libtorrent-peer.py leech TORRENT SAVE PORT PEER...  download into SAVE, fsync every file, exit 0

Prints one JSON line when listening ({"ready": true}) and, for leech, one when
done: {"done": true, "seconds": S} with S from the torrent's add to the last
fsync (the same "verified and on the disk" point at which `blockswarm deploy`
finishes). Run with /usr/bin/python3 (pyenv's python has no libtorrent).
"""
import json
import os
import sys
import time

import libtorrent as lt

POLL = 0.01


def main():
    mode, torrent, save, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    peers = sys.argv[5:]
    ses = lt.session({
        'listen_interfaces': '127.0.0.1:%d' % port,
        'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
        'allow_multiple_connections_per_ip': True,
        # TCP like blockswarm: libtorrent prefers uTP, which moves ~6 MB/s over loopback
        'enable_outgoing_utp': False, 'enable_incoming_utp': False,
        'alert_mask': lt.alert_category.error,
    })
    p = lt.add_torrent_params()
    p.ti = lt.torrent_info(torrent)
    p.save_path = save
    if mode == 'seed':
        p.flags |= lt.torrent_flags.seed_mode
    started = time.monotonic()
    h = ses.add_torrent(p)
    for peer in peers:
        host, pt = peer.rsplit(':', 1)
        h.connect_peer((host, int(pt)))
    print(json.dumps({'ready': True}), flush=True)
    if mode == 'seed':
        while True:
            time.sleep(3600)
    while not h.status().is_seeding:
        for a in ses.pop_alerts():
            print(json.dumps({'alert': a.message()}), file=sys.stderr, flush=True)
        time.sleep(POLL)
    files = p.ti.files()
    for i in range(files.num_files()):
        fd = os.open(os.path.join(save, files.file_path(i)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    s = h.status()
    print(json.dumps({'done': True, 'seconds': time.monotonic() - started, 'bytes': s.total_wanted_done,
                      'failed': s.total_failed_bytes}), flush=True)


main()
