"""Homes with a size limit: each home an ext4 filesystem image on a loop device, for Docker's ``local`` driver.

Docker's ``local`` volume driver mounts a block device (``type=ext4,device=...``) but cannot set up a loop device
for a file itself (``o=loop`` is mount(8)'s, not the kernel's). This module is the small part that does: the hub
runs it as a one-shot helper container (``devdock-home-image``, see
:meth:`devdock_spawner.spawner_homes.HomesMixin.home_image_step`) with the folder of home images bound at the
same path as on the host, ``/dev/loop-control`` and the loop devices' cgroup rule, no network and no other
capability than ``MKNOD``. Commands:

``attach IMAGE SIZE LINK [new]``
    Make ``IMAGE`` (a sparse file of ``SIZE`` bytes with an empty ext4) if it does not exist and the home is
    ``new`` (a home whose image went missing is an error, never a fresh empty home), grow it when
    ``SIZE`` is larger and it is not in use, attach it to a free loop device, and point the symlink ``LINK`` (the
    volume's ``device``) at that device. A home already attached (its server's container is still up) keeps its
    device. Prints one JSON line: ``{"device", "created", "size"}``.
``release LINK``
    The container has mounted the home: detach its loop device lazily (the kernel frees it when the last mount
    goes, so a stopped server holds no loop device) and remove ``LINK`` (nothing else can mount this home by a
    stale link, e.g. after a reboot gave its device number to another image).
``remove IMAGE LINK``
    The home is deleted (offboarding): detach, remove the image and the link.

Every command holds ``<folder>/.lock`` so that two helpers never hand out the same loop device.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import struct
import subprocess
import sys

LOOP_MAJOR = 7
LOOP_GET_STATUS64 = 0x4C05  # <linux/loop.h>; struct loop_info64 starts with lo_device, lo_inode (u64 each)
LOOP_INFO64_SIZE = 232
SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
#: The smallest home: ext4's journal and metadata need a few MiB of it.
MIN_SIZE = 32 * 1024**2


def parse_size(text: str) -> int:
    """Bytes of a size as ``home_size`` spells it: ``"20G"``, ``"512M"``, ``"1T"``, or a plain number of bytes.

    >>> parse_size("20G") == 20 * 1024**3
    True
    """
    found = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not found:
        raise ValueError(f"{text!r} is not a size: write e.g. 20G, 512M or 1T")
    size = int(found.group(1)) * SIZE_UNITS[found.group(2).upper()]
    if size < MIN_SIZE:
        raise ValueError(f"{text!r} is too small for a home: at least {MIN_SIZE // 1024**2}M")
    return size


def _run(*command: str, ok: tuple[int, ...] = (0,)) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode not in ok:
        raise RuntimeError(f"{' '.join(command)}: {(done.stderr or done.stdout).strip()}")
    return done.stdout.strip()


def attached_device(image: str) -> str:
    """The loop device ``image`` is attached to (``/dev/loopN``), or ``""``.

    Matched by the backing file's device and inode (``LOOP_GET_STATUS64``), as ``losetup -j`` does: the path in
    sysfs is the one the attaching helper saw, in a mount namespace that is gone.
    """
    st = os.stat(image)
    for backing in glob.glob("/sys/block/loop*/loop/backing_file"):
        device = "/dev/" + backing.split("/")[3]
        try:
            _device_node(device)
            fd = os.open(device, os.O_RDONLY)
            try:
                info = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(LOOP_INFO64_SIZE))
            finally:
                os.close(fd)
        except OSError:
            continue  # detached while we looked
        if struct.unpack_from("=QQ", info) == (st.st_dev, st.st_ino):
            return device
    return ""


def _device_node(device: str) -> None:
    """The container's ``/dev`` has only the nodes it started with: make the free device's node."""
    if not os.path.exists(device):
        minor = int(device.removeprefix("/dev/loop"))
        os.mknod(device, 0o600 | 0o060000, os.makedev(LOOP_MAJOR, minor))  # a block device


def _in_use(device: str) -> bool:
    """Whether ``device`` is mounted (or otherwise held): an exclusive open of a block device fails then."""
    _device_node(device)
    try:
        fd = os.open(device, os.O_RDONLY | os.O_EXCL)
    except OSError:
        return True
    os.close(fd)
    return False


def _make(image: str, size: int) -> None:
    partial = image + ".partial"
    with open(partial, "wb") as f:
        f.truncate(size)  # sparse: the host's disk holds only what the user writes
    # No blocks reserved for root, inode tables left for the kernel to use as they are (the volume mounts with
    # noinit_itable, so nothing zeroes them and the sparse file stays small), a 32 MiB journal for large homes.
    journal = ["-J", "size=32"] if size >= 4 * 1024**3 else []
    _run("mkfs.ext4", "-q", "-F", "-m", "0", "-L", "devdock-home", *journal,
         "-E", "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0", partial)  # fmt: skip
    _no_lost_found(partial)
    os.chmod(partial, 0o600)
    os.rename(partial, image)


def _no_lost_found(image: str) -> None:
    """The home's root is the user's home folder: no lost+found in it (e2fsck makes one again when it needs one).
    debugfs removes only an empty one, never a folder of the user's."""
    _run("debugfs", "-w", "-R", "rmdir lost+found", image)


def _grow(image: str, size: int) -> bool:
    if os.path.getsize(image) >= size:
        return False
    with open(image, "r+b") as f:
        f.truncate(size)
    _run("e2fsck", "-f", "-p", image, ok=(0, 1))  # 1: e2fsck fixed something (it makes lost+found again)
    _run("resize2fs", image)
    _no_lost_found(image)
    return True


def _link(link: str, device: str) -> None:
    partial = link + ".partial"
    if os.path.lexists(partial):
        os.unlink(partial)
    os.symlink(device, partial)
    os.replace(partial, link)


def attach(image: str, size: int, link: str, new: bool = False) -> dict:
    created = not os.path.exists(image)
    if created and not new:
        raise RuntimeError(f"the home image {image} is missing (restore it from a backup); nothing was created")
    if created:
        _make(image, size)
    device = attached_device(image)
    if device and not _in_use(device):
        # Attached but not mounted (a helper stopped half-way): start again, so that growing can happen.
        _run("losetup", "-d", device)
        device = ""
    if not device:
        _grow(image, size)
        for _ in range(20):  # another process may take the free device between the two calls
            free = _run("losetup", "-f")
            _device_node(free)
            try:
                _run("losetup", free, image)
            except RuntimeError:
                continue
            device = free
            break
        else:
            raise RuntimeError(f"no free loop device for {image}")
    _link(link, device)
    return {"device": device, "created": created, "size": os.path.getsize(image)}


def release(link: str) -> dict:
    device = os.readlink(link) if os.path.islink(link) else ""
    if device:
        _device_node(device)
        _run("losetup", "-d", device)  # mounted: the kernel detaches it when the last mount goes
        os.unlink(link)
    return {"device": device}


def remove(image: str, link: str) -> dict:
    device = attached_device(image) if os.path.exists(image) else ""
    if device:
        _device_node(device)
        _run("losetup", "-d", device)
    for path in (image, link):
        if os.path.lexists(path):
            os.unlink(path)
    return {"device": device}


def main(argv: list[str]) -> int:
    command, *args = argv
    folder = os.path.dirname(args[0])
    with open(os.path.join(folder, ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if command == "attach":
                result = attach(args[0], int(args[1]), args[2], new=args[3:] == ["new"])
            elif command == "release":
                result = release(args[0])
            elif command == "remove":
                result = remove(args[0], args[1])
            else:
                raise RuntimeError(f"unknown command {command!r}")
        except (OSError, RuntimeError, ValueError) as e:
            print(f"devdock home image: {e}", file=sys.stderr)
            return 1
    print(json.dumps(result))
    return 0


def cli() -> None:
    """``devdock-home-image COMMAND ARGS...`` (the console script)."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
