# The host agent's bootstrap: its text is sent as `python -I -S -u -c TEXT MARKER` from `/`.
# Runs on the host before any kvmnet module exists there, so: standard library only, no
# imports from kvmnet, nothing taken from the user's environment.
# - `-I` (isolated): no current directory, user site or PYTHON* variables on the path, so
#   nothing in the SSH user's home or working directory can shadow a module; `-S`: no `site`,
#   so no `.pth` file runs code as root. The interpreter's site directories are put on the
#   path directly.
# - The agent's files ({relative path: source} of the tree `kvmnet_agent/{agent,spec}/...`,
#   every path checked first) are written to a 0700 directory under kvmnet's run directory
#   named by their hash, shared by agents of the same code and held with a shared lock for
#   the agent's life; directories no live agent holds are removed here, so an agent killed
#   with its connection leaves nothing behind for long.
# - stdin's first line names that hash, {"code": DIGEST}. When its directory exists (only a
#   complete tree is renamed into place), the agent starts from it; otherwise this answers
#   {"need": DIGEST} and reads the files as the next line, which must hash to DIGEST.
# - MARKER (printed before anything else) lets the controller skip whatever a chatty login
#   shell printed first.
import fcntl
import hashlib
import json
import os
import re
import shutil
import site
import stat
import sys
import tempfile


def site_dirs():
    """The interpreter's site-packages, a venv's first: under -S, `site` has not set
    sys.prefix to the venv (Python 3.11 does that in site.venv(), which also runs .pth), and
    Debian's getsitepackages() then names dist-packages, so the venv's is spelled out."""
    found = []
    bindir = os.path.dirname(sys.executable)
    for conf in (os.path.join(bindir, "pyvenv.cfg"), os.path.join(bindir, "..", "pyvenv.cfg")):
        if os.path.isfile(conf):
            venv = os.path.dirname(os.path.abspath(conf))
            version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
            found += [os.path.join(venv, lib, version, "site-packages") for lib in ("lib", "lib64")]
            break
    return [p for p in found if os.path.isdir(p)] + site.getsitepackages()


sys.path.extend(p for p in site_dirs() if p not in sys.path)


def private_dir(path):
    """`path` as a directory of this user's, mode 0700, not a symlink (made if missing)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise SystemExit(f"kvmnet: {path} is not a directory owned by uid {os.geteuid()}")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700, follow_symlinks=False)
    return path


def locked(path, how):
    """An open lock file at `path` (never through a symlink) under flock `how`, or None."""
    while True:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        try:
            fcntl.flock(fd, how)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.lstat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # removed by a cleaner meanwhile: lock the new one


def clear_stale(codes, keep):
    for entry in os.listdir(codes):
        name = entry[: -len(".lock")] if entry.endswith(".lock") else entry
        if name in (keep, ".write"):
            continue
        if ".tmp-" in name:  # a copy being written, by an agent that may have died
            pid = name.rsplit("-", 1)[1]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(os.path.join(codes, name), ignore_errors=True)
            continue
        fd = locked(os.path.join(codes, name + ".lock"), fcntl.LOCK_EX | fcntl.LOCK_NB)
        if fd is None:
            continue  # a live agent (or its rollback) runs this code
        shutil.rmtree(os.path.join(codes, name), ignore_errors=True)
        os.unlink(os.path.join(codes, name + ".lock"))
        os.close(fd)


PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def checked_parts(path):
    """The parts of a shipped file's relative path, `kvmnet_agent/.../name.py` (at most four
    parts, each a Python identifier): nothing can be written outside the code directory."""
    parts = path.split("/")
    if (
        parts[0] != "kvmnet_agent"
        or len(parts) > 4
        or not parts[-1].endswith(".py")
        or not all(PART.fullmatch(p) for p in parts[:-1] + [parts[-1][:-3]])
    ):
        raise SystemExit("kvmnet: bad agent file name")
    return parts


DIGEST = re.compile(r"[0-9a-f]{32}")


def code_dir(run_root, digest):
    return os.path.join(private_dir(os.path.join(private_dir(run_root), "agent-code")), digest)


def installed(run_root, digest):
    """The code directory of `digest` and its shared lock, when a complete tree is there;
    None otherwise. Locked first: a cleaner removes only directories nobody holds."""
    root = code_dir(run_root, digest)
    held = locked(root + ".lock", fcntl.LOCK_SH)
    try:
        info = os.lstat(root)
    except FileNotFoundError:
        info = None
    if info is None or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        os.close(held)
        return None
    codes = os.path.dirname(root)
    writing = locked(os.path.join(codes, ".write.lock"), fcntl.LOCK_EX)
    clear_stale(codes, digest)  # older versions whose agents have ended since
    os.close(writing)
    return root, held


def install(files, run_root, digest):
    parts = {path: checked_parts(path) for path in files}
    blob = json.dumps(files, sort_keys=True).encode()
    if hashlib.sha256(blob).hexdigest()[:32] != digest:
        raise SystemExit("kvmnet: the agent's files do not match their digest")
    root = code_dir(run_root, digest)
    codes = os.path.dirname(root)
    # One agent at a time writes or clears; each holds its own code's lock while it lives.
    writing = locked(os.path.join(codes, ".write.lock"), fcntl.LOCK_EX)
    held = locked(root + ".lock", fcntl.LOCK_SH)
    if not all(_same(os.path.join(root, *parts[n]), t) for n, t in files.items()):
        tmp = f"{root}.tmp-{os.getpid()}"
        os.mkdir(tmp, 0o700)
        for name, text in files.items():
            where = tmp
            for part in parts[name][:-1]:
                where = os.path.join(where, part)
                if not os.path.isdir(where):
                    os.mkdir(where, 0o700)
            fd = os.open(
                os.path.join(where, parts[name][-1]),
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                0o600,
            )
            with os.fdopen(fd, "w") as f:
                f.write(text)
        shutil.rmtree(root, ignore_errors=True)
        os.rename(tmp, root)
    clear_stale(codes, digest)
    os.close(writing)
    return root, held


def _same(path, text):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    with os.fdopen(fd) as f:
        return f.read() == text


def main():
    os.chdir("/")
    run_root = os.environ.get("KVMNET_HOST_STATE") or "/run/kvmnet"
    if os.geteuid() != 0:  # cannot be kvmnet's run dir: the agent will say it needs root
        run_root = os.path.join(tempfile.gettempdir(), f"kvmnet-uid{os.geteuid()}")
    asked = json.loads(sys.stdin.readline())
    digest = asked.get("code") if isinstance(asked, dict) else None
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise SystemExit('kvmnet: the first line must be {"code": DIGEST}')
    print(sys.argv[1] if len(sys.argv) > 1 else "", flush=True)
    found = installed(run_root, digest)
    if found is None:
        print(json.dumps({"need": digest}), flush=True)
        found = install(json.loads(sys.stdin.readline()), run_root, digest)
    root, _held = found  # the lock lives as long as this process
    sys.path.insert(0, root)
    from kvmnet_agent.agent import server

    server.main()


if __name__ == "__main__":
    main()
