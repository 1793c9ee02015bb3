"""One request per write, where the kernel allows it: the requests a write costs, counted by the mount's own metrics.

Before each write the kernel asks the file system for the file's ``security.capability`` attribute
(fs/inode.c ``file_remove_privs`` -> security/commoncap.c ``cap_inode_need_killpriv``), so a mount that serves
extended attributes answers two requests per write.  docs/performance.md ("One request per write") lists every way
to stop the probe and what each costs; these tests hold the kernel to what that page says.
"""

from __future__ import annotations

import errno
import json
import os
from collections import Counter
from pathlib import Path

import pytest
import yaml

from interposer.mount.child import MountProcess
from interposer.names import ATTR_ERROR_TYPE, ATTR_OPERATION, OPERATION_DURATION, TRACE_CONTEXT_XATTR, OpName
from interposer.names import prometheus_label as label

from .conftest import MountFactory
from .prometheus import scrape
from .test_semantics import as_nobody

WRITES = 64
BLOCK = b"w" * 4096


def _mount(mount_factory: MountFactory, scratch: Path, config: dict[str, object]) -> MountProcess:
    path = scratch / f"config{len(list(scratch.glob('config*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({"tracing": {"enabled": False}, **config}))
    return mount_factory(args=["--config", str(path)])


def _requests(mount: MountProcess) -> Counter[tuple[str, str]]:
    """Requests the mount served, by (operation, error.type; empty for a success), from its own scrape endpoint."""
    scraped = scrape(mount.status()["metrics"]["exporters"]["prometheus"])
    counts: Counter[tuple[str, str]] = Counter()
    for name, labels, value in scraped.samples:
        if name == OPERATION_DURATION.series("count"):
            counts[labels[label(ATTR_OPERATION)], labels.get(label(ATTR_ERROR_TYPE), "")] += int(value)
    return counts


def _write_blocks(mount: MountProcess) -> Counter[tuple[str, str]]:
    """Write WRITES blocks of 4 KiB, one pwrite each, to a new file; the requests those writes cost."""
    fd = os.open(mount.mountpoint / "written", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        before = _requests(mount)
        for index in range(WRITES):
            assert os.pwrite(fd, BLOCK, index * len(BLOCK)) == len(BLOCK)
        after = _requests(mount)
    finally:
        os.close(fd)
    return after - before


def _getxattrs(requests: Counter[tuple[str, str]]) -> Counter[str]:
    return Counter({error: count for (name, error), count in requests.items() if name == OpName.GETXATTR})


def test_by_default_the_kernel_probes_before_every_write(mount_factory: MountFactory, scratch: Path) -> None:
    """The cost the switch exists for: full xattr support means a getxattr, answered ENODATA, per write."""
    requests = _write_blocks(_mount(mount_factory, scratch, {}))
    assert requests[OpName.WRITE, ""] == WRITES
    assert _getxattrs(requests) == {"ENODATA": WRITES}


def test_the_writeback_cache_batches_writes_but_not_the_probes(mount_factory: MountFactory, scratch: Path) -> None:
    """cache.writeback_cache: the kernel's generic write path still removes privileges once per write call."""
    requests = _write_blocks(_mount(mount_factory, scratch, {"cache": {"writeback_cache": True}}))
    assert requests[OpName.WRITE, ""] < WRITES
    assert _getxattrs(requests) == {"ENODATA": WRITES}


def test_with_xattrs_off_a_write_is_one_request(mount_factory: MountFactory, scratch: Path) -> None:
    """fuse.xattrs false: the first probe is answered ENOSYS, and the kernel never asks again."""
    # Tracing on (exporting nowhere): the tracing layer answers the announcement at the end.
    mount = _mount(mount_factory, scratch, {"fuse": {"xattrs": False}, "tracing": {"exporter": "none"}})
    requests = _write_blocks(mount)
    assert requests[OpName.WRITE, ""] == WRITES
    assert sum(_getxattrs(requests).values()) <= 1
    assert set(_getxattrs(requests)) <= {"ENOSYS"}
    assert sum(requests.values()) <= WRITES + 1
    # The kernel answers every later getxattr itself, and every listxattr after the first.
    before = _requests(mount)
    for _ in range(2):
        for call in (
            lambda: os.getxattr(mount.mountpoint / "written", "user.k"),
            lambda: os.listxattr(mount.mountpoint),
        ):
            with pytest.raises(OSError) as refused:
                call()
            assert refused.value.errno == errno.EOPNOTSUPP
    asked = _requests(mount) - before
    assert not _getxattrs(asked)
    assert sum(count for (name, _), count in asked.items() if name == OpName.LISTXATTR) == 1
    # Announcing a trace context is a setxattr, which the kernel still sends.
    os.setxattr(mount.mountpoint, TRACE_CONTEXT_XATTR, b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")


def test_with_xattrs_off_a_write_still_drops_the_files_capabilities(mount_factory: MountFactory, scratch: Path) -> None:
    """What the kernel no longer does through the mount (it cannot see security.capability), the backing file
    system still does: the passthrough backend's write is a write there, which removes the attribute."""
    mount = _mount(mount_factory, scratch, {"fuse": {"xattrs": False}})
    backing = mount.backing / "capable"
    backing.write_bytes(b"x")
    backing.chmod(0o666)
    raw_net = (0x02000000 | 1).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(12)
    os.setxattr(backing, "security.capability", raw_net)  # VFS_CAP_REVISION_2, effective: CAP_NET_RAW
    as_nobody("import sys\nwith open(sys.argv[1], 'a') as f: f.write('y')", str(mount.mountpoint / "capable"))
    with pytest.raises(OSError) as gone:
        os.getxattr(backing, "security.capability")
    assert gone.value.errno == errno.ENODATA


def test_direct_io_writes_are_never_probed(mount_factory: MountFactory, scratch: Path) -> None:
    """cache.direct_io: the kernel's direct write path (fs/fuse/file.c fuse_direct_write_iter) skips the probe."""
    requests = _write_blocks(_mount(mount_factory, scratch, {"cache": {"direct_io": True}}))
    assert requests[OpName.WRITE, ""] == WRITES
    assert not _getxattrs(requests)


def test_the_choice_rests_on_the_sources() -> None:
    """tests/facts/write_probe.json, extracted by tools/write_probe_facts.py: why the switch, not KILLPRIV_V2."""
    facts = json.loads((Path(__file__).with_name("facts") / "write_probe.json").read_text())
    kernel, pyfuse3 = facts["kernel"], facts["pyfuse3"]
    # The probe: every cached write asks for security.capability, unless the inode is S_NOSEC ...
    assert kernel["commoncap.c cap_inode_need_killpriv reads security.capability"]
    assert kernel["fuse/file.c fuse_cache_write_iter removes privileges"]
    assert not kernel["fuse/file.c fuse_direct_write_iter removes privileges"]
    # ... which FUSE allows only with FUSE_HANDLE_KILLPRIV_V2, and forgets at every attribute refresh ...
    assert kernel["fuse/inode.c SB_NOSEC is set only with FUSE_HANDLE_KILLPRIV_V2"]
    assert kernel["fuse/inode.c every attribute refresh clears S_NOSEC"]
    # ... which neither the libfuse the image links nor pyfuse3 lets a file system ask for, or honour.
    (linked, *_) = facts["libfuse"]
    assert linked["tag"] == "fuse-3.14.0"
    assert not linked["can send FUSE_HANDLE_KILLPRIV_V2"]
    assert "FUSE_CAP_HANDLE_KILLPRIV_V2" not in pyfuse3["capabilities init wants"]
    assert not pyfuse3["init lets the file system see the connection"]
    assert not pyfuse3["write hands the file system the write flags"]
    # FUSE passthrough, were pyfuse3 to offer it, still probes through the FUSE file.
    assert kernel["backing-file.c backing_file_write_iter (FUSE passthrough) removes the FUSE file's privileges"]
    # What remains: ENOSYS, after which the kernel answers getxattr itself.
    assert kernel["fuse/xattr.c ENOSYS from getxattr ends getxattr for the connection"]
