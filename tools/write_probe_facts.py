"""Extract, from the kernel's, libfuse's and pyfuse3's source, why a write costs a getxattr and what can stop it.

docs/performance.md ("One request per write") rests on these facts; tests/test_write_requests.py checks the
choice they lead to and proves the effect on a real mount.  Usage:

    python tools/write_probe_facts.py KERNEL_DIR LIBFUSE_GIT PYFUSE3_DIR > tests/facts/write_probe.json

KERNEL_DIR is a kernel source tree (Debian's linux-source package unpacks one); LIBFUSE_GIT a bare git
directory of libfuse/libfuse; PYFUSE3_DIR the installed pyfuse3 package, which ships its Cython sources.
The libfuse tags read are Debian bookworm's (3.14.0, what the image links) and the newest one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

LIBFUSE_TAGS = ("fuse-3.14.0", "fuse-3.18.2")


def body(source: str, signature: str) -> str:
    """The text of the C function (or Cython def) that starts with ``signature``, up to its closing line."""
    start = source.index(signature)
    end = re.compile(r"^(\}|cdef |async def |def )", re.MULTILINE).search(source, start + len(signature))
    assert end is not None, signature
    return source[start : end.end()]


def kernel_facts(root: Path) -> dict[str, object]:
    def read(path: str) -> str:
        return (root / path).read_text()

    makefile = read("Makefile")
    version = re.search(r"^VERSION = (\d+)\nPATCHLEVEL = (\d+)$", makefile, re.MULTILINE)
    assert version is not None, "a kernel tree's Makefile starts with its version"
    xattr = read("fs/fuse/xattr.c")
    inode = read("fs/fuse/inode.c")
    file_c = read("fs/fuse/file.c")
    dir_c = read("fs/fuse/dir.c")
    init_reply = body(inode, "static void process_init_reply(")
    killpriv_v2 = init_reply[init_reply.index("FUSE_HANDLE_KILLPRIV_V2") :]
    removes_privs = re.compile(r"file_remove_privs|kiocb_modified")
    return {
        "version": ".".join(version.groups()),
        "commoncap.c cap_inode_need_killpriv reads security.capability": "__vfs_getxattr(dentry, inode, XATTR_NAME_CAPS"
        in body(read("security/commoncap.c"), "int cap_inode_need_killpriv("),
        "inode.c file_remove_privs_flags skips only S_NOSEC inodes": "if (IS_NOSEC(inode) || !S_ISREG(inode->i_mode))"
        in body(read("fs/inode.c"), "int file_remove_privs_flags("),
        "fuse/file.c fuse_cache_write_iter removes privileges": bool(
            removes_privs.search(body(file_c, "static ssize_t fuse_cache_write_iter("))
        ),
        "fuse/file.c fuse_direct_write_iter removes privileges": bool(
            removes_privs.search(body(file_c, "static ssize_t fuse_direct_write_iter("))
        ),
        "backing-file.c backing_file_write_iter (FUSE passthrough) removes the FUSE file's privileges": bool(
            removes_privs.search(body(read("fs/backing-file.c"), "ssize_t backing_file_write_iter("))
        ),
        "fuse/xattr.c ENOSYS from getxattr ends getxattr for the connection": "fm->fc->no_getxattr = 1;"
        in body(xattr, "ssize_t fuse_getxattr("),
        "fuse/xattr.c ENOSYS from listxattr ends listxattr for the connection": "fm->fc->no_listxattr = 1;"
        in body(xattr, "ssize_t fuse_listxattr("),
        "fuse/inode.c fuse_sb_defaults clears SB_NOSEC": "sb->s_flags &= ~(SB_NOSEC"
        in body(inode, "static void fuse_sb_defaults("),
        "fuse/inode.c SB_NOSEC is set only with FUSE_HANDLE_KILLPRIV_V2": inode.count("|= SB_NOSEC") == 1
        and "fm->sb->s_flags |= SB_NOSEC;" in killpriv_v2[: killpriv_v2.index("}")],
        "fuse/inode.c every attribute refresh clears S_NOSEC": "inode->i_flags &= ~S_NOSEC;"
        in body(inode, "void fuse_change_attributes_common("),
        "fuse/dir.c with FUSE_HANDLE_KILLPRIV the kernel leaves suid/sgid to the file system": (
            "if (!fc->handle_killpriv && !fc->handle_killpriv_v2)" in body(dir_c, "static int fuse_setattr(")
        ),
    }


def libfuse_facts(git_dir: str, tag: str) -> dict[str, object]:
    def show(path: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", git_dir, "show", f"{tag}:{path}"], capture_output=True, text=True, check=True
        ).stdout

    lowlevel = show("lib/fuse_lowlevel.c")
    signature = "_do_init(fuse_req_t req" if "_do_init(" in lowlevel else "void do_init(fuse_req_t req"
    do_init = re.sub(r"/\*.*?\*/", "", body(lowlevel, signature), flags=re.DOTALL)  # without its comments
    defaults = re.findall(r"LL_SET_DEFAULT\([^,]+,\s*(FUSE_CAP_\w+)\)", do_init)
    return {
        "tag": tag,
        "capabilities wanted by default": defaults,
        "can send FUSE_HANDLE_KILLPRIV_V2": "outargflags |= FUSE_HANDLE_KILLPRIV_V2" in do_init,
    }


def pyfuse3_facts(package: Path) -> dict[str, object]:
    handlers = (package / "handlers.pxi").read_text()
    init = body(handlers, "cdef void fuse_init (")
    writes = body(handlers, "cdef void fuse_write (") + body(handlers, "cdef void fuse_write_buf(")
    version = re.search(r"^Version: (\S+)", next(package.parent.glob("pyfuse3-*.dist-info/METADATA")).read_text(), re.M)
    assert version is not None
    return {
        "version": version.group(1),
        "capabilities init wants": re.findall(r"conn\.want \|= (FUSE_CAP_\w+)", init),
        "init lets the file system see the connection": "operations.init()" not in init,
        "write hands the file system the write flags": "write_flags" in writes,
    }


def extract(kernel: Path, libfuse: str, pyfuse3: Path) -> dict[str, object]:
    return {
        "kernel": kernel_facts(kernel),
        "libfuse": [libfuse_facts(libfuse, tag) for tag in LIBFUSE_TAGS],
        "pyfuse3": pyfuse3_facts(pyfuse3),
    }


if __name__ == "__main__":
    print(json.dumps(extract(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])), indent=2))
