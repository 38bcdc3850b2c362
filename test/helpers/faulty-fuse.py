#!/usr/bin/python3
"""A FUSE filesystem holding one file whose bytes live in a real image file,
and whose writes (and, if asked, reads) fail in chosen byte ranges: a disk
with bad sectors, or one that runs out of space, for the storage tests.

usage: faulty-fuse.py IMAGE MOUNTPOINT [--name disk.img]
         [--fail-writes START:END] [--fail-reads START:END] [--no-space-from OFFSET]
         [--partial] [--hold-fsync FILE]

- A write request that touches [START, END) fails as a whole with EIO, as a
  disk fails a multi-sector write over a bad sector.
- --no-space-from: the same with ENOSPC for everything at and past OFFSET.
- A read request that touches a --fail-reads range fails with EIO.
- --partial: a request that starts before the failing range transfers the
  bytes before it and returns that short count, as a file system does; the
  caller comes back for the rest and gets the error at the exact offset.
  Never under a loop device: the kernel's loop driver takes a short write
  from its backing file for a complete one and loses the rest without an error.

- --hold-fsync FILE: an fsync/fdatasync waits while FILE exists (at most
  300 s), printing "holding fsync" once it starts waiting and "released
  fsync" when it goes on: a disk whose flush is slow, to hold a finish step
  open while a test looks at what every status surface says.

Mounted with direct_io: the kernel sends every read and write straight here
(no FUSE page cache), each request up to 128 KiB (max_write).

Runs in the foreground. Prints "ready" once mounted, then one line per
injected fault: "fault write EIO offset=N size=M". Ends when unmounted.
Needs Debian's python3-fusepy (run with /usr/bin/python3).
"""
import argparse
import errno
import os
import stat
import sys
import time

from fusepy import FUSE, FuseOSError, Operations


def byte_range(text):
    start, end = (int(x, 0) for x in text.split(':'))
    if not 0 <= start < end:
        raise argparse.ArgumentTypeError(f'{text}: want START:END with 0 <= START < END')
    return start, end


def say(line):
    sys.stdout.write(line + '\n')
    sys.stdout.flush()


class FaultyFile(Operations):
    use_ns = True

    def __init__(self, image, name, fail_writes, fail_reads, no_space_from, partial, hold_fsync=None):
        self.hold_fsync = hold_fsync
        self.fd = os.open(image, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.name = '/' + name
        self.write_faults = [(s, e, errno.EIO) for s, e in fail_writes]
        if no_space_from is not None:
            self.write_faults.append((no_space_from, 2**63, errno.ENOSPC))
        self.write_faults.sort()
        self.fail_reads = sorted(fail_reads)
        self.partial = partial
        self.now = time.time_ns()

    def init(self, path):
        say('ready')

    def destroy(self, path):
        os.close(self.fd)

    def getattr(self, path, fh=None):
        times = dict(st_atime=self.now, st_mtime=self.now, st_ctime=self.now)
        if path == '/':
            return dict(st_mode=stat.S_IFDIR | 0o755, st_nlink=2, **times)
        if path == self.name:
            return dict(st_mode=stat.S_IFREG | 0o644, st_nlink=1, st_size=self.size, **times)
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return ['.', '..', self.name[1:]]

    def open(self, path, flags):
        if path != self.name:
            raise FuseOSError(errno.ENOENT)
        return 0

    def truncate(self, path, length, fh=None):
        if length != self.size:
            raise FuseOSError(errno.EPERM)

    def read(self, path, size, offset, fh):
        end = min(offset + size, self.size)
        for start, stop in self.fail_reads:
            if offset < stop and end > start:
                if offset < start and self.partial:
                    return os.pread(self.fd, start - offset, offset)
                say(f'fault read EIO offset={offset} size={size}')
                raise FuseOSError(errno.EIO)
        return os.pread(self.fd, max(0, end - offset), offset)

    def write(self, path, data, offset, fh):
        if offset + len(data) > self.size:
            raise FuseOSError(errno.EFBIG)
        end = offset + len(data)
        for start, stop, code in self.write_faults:
            if offset < stop and end > start:
                if offset < start and self.partial:
                    return os.pwrite(self.fd, data[: start - offset], offset)
                say(f'fault write {errno.errorcode[code]} offset={offset} size={len(data)}')
                raise FuseOSError(code)
        return os.pwrite(self.fd, data, offset)

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        if self.hold_fsync and os.path.exists(self.hold_fsync):
            say('holding fsync')
            deadline = time.monotonic() + 300
            while os.path.exists(self.hold_fsync) and time.monotonic() < deadline:
                time.sleep(0.05)
            say('released fsync')
        os.fdatasync(self.fd)

    def release(self, path, fh):
        return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('image')
    p.add_argument('mountpoint')
    p.add_argument('--name', default='disk.img')
    p.add_argument('--fail-writes', type=byte_range, action='append', default=[])
    p.add_argument('--fail-reads', type=byte_range, action='append', default=[])
    p.add_argument('--no-space-from', type=lambda t: int(t, 0))
    p.add_argument('--partial', action='store_true')
    p.add_argument('--hold-fsync')
    a = p.parse_args()
    ops = FaultyFile(a.image, a.name, a.fail_writes, a.fail_reads, a.no_space_from, a.partial, a.hold_fsync)
    FUSE(ops, a.mountpoint, foreground=True, direct_io=True, fsname='faulty-fuse', subtype='faulty')


if __name__ == '__main__':
    main()
