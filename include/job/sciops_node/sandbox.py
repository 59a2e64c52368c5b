"""Confining a macro's JVM with bubblewrap (``bwrap``, Debian's ``bubblewrap``): the local backend's tasks and
every smoke run on the Airflow worker.

Macros are user code, and ImageJ's macro language reads and writes any file, opens URLs and runs programs
(``exec``). When the launcher carries ``"sandbox": {"kind": "bwrap", ...}`` (the Airflow side puts it there:
``SCIOPS_MACRO_SANDBOX``, on by default where tasks run on the worker), the JVM starts inside a sandbox that sees:

* read only: ``/usr`` without its program folders (``/usr/bin``, ``/usr/sbin``, ``/usr/local/bin``,
  ``/usr/local/sbin``, ``/usr/games`` are empty: no shell to ``exec``), the few files of ``/etc`` a JVM reads
  (:data:`ETC`), the launcher's files outside ``/usr`` (a Fiji folder, an ImageJ jar), the dialog watcher's jar,
  the X server's socket folder, the run's macro and driver, the project's ``input/``, and what the spec's ``read``
  lists (the Airflow side: SciOps's shipped macros and the project's ``src/``, which a macro may ``runMacro``);
* read and write: the runner's scratch folder (the JVM's home and temp folder) and the run's image output
  folders (``work/images``);
* nothing else: no ``/root``, ``/home``, Airflow's home, the storage root, other projects or runs, ``/etc``'s
  keys; its own ``/tmp`` and ``/dev``; no network (a namespace of its own with loopback only), its own pids,
  no capabilities (the worker may be root), no new user namespaces where the kernel lets bwrap make one.

:func:`base_flags` finds the flags this machine's bwrap runs with (a probe, once per process);
:func:`wrap` builds the command. The runner never starts an unconfined JVM when the launcher asks for the
sandbox: a bwrap that cannot run fails the task, naming :data:`SETTING`.
"""
from __future__ import annotations

import os
import shutil
import subprocess

#: The Airflow-side setting that turns the sandbox off (named in every error: the way out).
SETTING = "SCIOPS_MACRO_SANDBOX"
#: Flag sets, strongest first: a user namespace of its own in which no further one may be made
#: (``--disable-userns``, bwrap 0.8), else without (an older bwrap, or a kernel without user namespaces
#: where bwrap runs as root). Both: every namespace bwrap can make, no capabilities, dies with the runner.
FLAG_SETS = (
    ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--cap-drop", "ALL"),
    ("--unshare-all", "--die-with-parent", "--cap-drop", "ALL"),
)
#: What of /etc a JVM and fontconfig read (each bound when it exists).
ETC = ("/etc/java-17-openjdk", "/etc/java-21-openjdk", "/etc/java-11-openjdk", "/etc/fonts", "/etc/ld.so.cache",
       "/etc/localtime", "/etc/timezone", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf")
#: Program folders hidden under an empty tmpfs (the JVM is started by its real path, in /usr/lib/jvm).
HIDDEN = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/usr/games")
#: The X servers' sockets (ImageJ 1 needs a display; abstract sockets stay in the worker's network namespace).
X11_SOCKETS = "/tmp/.X11-unix"
#: How long the probe may take.
PROBE_S = 20

_probed: dict = {}


def _root_links():
    """/bin, /lib, ... as the host has them: links into /usr on a merged-/usr system, else bound read-only."""
    out = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + name
        if os.path.islink(path):
            out += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path) and name.startswith("lib"):
            out += ["--ro-bind", path, path]
    return out


def system_args(hide=True):
    """The read-only system part of the sandbox: /usr (programs hidden, unless not ``hide``: the probe runs
    ``true``), /lib links, /etc's few files."""
    args = ["--ro-bind", "/usr", "/usr"]
    for path in HIDDEN if hide else ():
        if os.path.isdir(path):
            args += ["--tmpfs", path]
    args += _root_links()
    for path in ETC:
        args += ["--ro-bind-try", path, path]
    args += ["--ro-bind-try", "/var/cache/fontconfig", "/var/cache/fontconfig",
             "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    return args


def binary(spec):
    return shutil.which((spec or {}).get("bwrap") or "bwrap")


def base_flags(spec):
    """``(flags, None)``: the strongest :data:`FLAG_SETS` entry this machine's bwrap runs with; ``(None, why)``."""
    exe = binary(spec)
    if not exe:
        return None, "bwrap (%s) is not installed" % ((spec or {}).get("bwrap") or "bwrap")
    if exe in _probed:
        return _probed[exe]
    true = os.path.realpath(shutil.which("true") or "/bin/true")
    said = ""
    for flags in FLAG_SETS:
        try:
            proc = subprocess.run([exe, *flags, *system_args(hide=False), "--", true], capture_output=True, text=True,
                                  timeout=PROBE_S)
        except (OSError, subprocess.SubprocessError) as exc:
            said = str(exc)
            continue
        if proc.returncode == 0:
            _probed[exe] = (list(flags), None)
            return _probed[exe]
        said = " ".join((proc.stderr or proc.stdout).split())[:300] or "exit %d" % proc.returncode
    _probed[exe] = (None, "%s fails here: %s" % (exe, said))
    return _probed[exe]


def unusable(spec):
    """Why the sandbox ``spec`` cannot run on this machine (a sentence naming :data:`SETTING`), or None."""
    flags, why = base_flags(spec)
    if flags:
        return None
    return ("the macro sandbox cannot run: %s. Install Debian's bubblewrap (scripts/setup.sh does); or, to run "
            "macros unconfined with the worker's rights, set %s=off on the Airflow side" % (why, SETTING))


def _outside_usr(path):
    return path and not os.path.realpath(path).startswith("/usr/")


def launcher_paths(launcher, agent=None):
    """Files and folders of ImageJ that a JVM reads and that /usr does not hold."""
    paths = []
    if launcher.get("kind") == "fiji" and launcher.get("fiji"):
        paths.append(os.path.dirname(os.path.realpath(launcher["fiji"])))   # Fiji.app: its own JRE and jars
    for key in ("ij_jar", "plugins_dir"):
        if _outside_usr(launcher.get(key)):
            paths.append(os.path.realpath(launcher[key]))
    java = shutil.which(launcher.get("java", "java")) if launcher.get("kind", "imagej1") == "imagej1" else None
    if java and _outside_usr(java):
        paths.append(os.path.dirname(os.path.dirname(os.path.realpath(java))))   # its JAVA_HOME
    if agent:
        paths.append(agent)
    return paths


def wrap(spec, argv, readable, writable, chdir):
    """``argv`` started inside the sandbox: ``readable`` bound read-only, ``writable`` read-write.

    The program is named by its real path (``/usr/bin/java`` is a link, and /usr/bin is hidden).
    Raises RuntimeError (:func:`unusable`'s words) when bwrap cannot run.
    """
    flags, _ = base_flags(spec)
    if not flags:
        raise RuntimeError(unusable(spec))
    args = [binary(spec), *flags, *system_args()]
    if os.path.isdir(X11_SOCKETS):
        args += ["--ro-bind", X11_SOCKETS, X11_SOCKETS]
    for path in dict.fromkeys(readable):
        if path and os.path.exists(path):
            args += ["--ro-bind", path, path]
    for path in dict.fromkeys(writable):
        os.makedirs(path, exist_ok=True)
        args += ["--bind", path, path]
    program = os.path.realpath(shutil.which(argv[0]) or argv[0])
    return args + ["--chdir", chdir, "--", program, *argv[1:]]


def jvm_pid(leader):
    """The JVM a sandbox runs: the earliest-started process of bwrap's session (``leader``, started with a session
    of its own) that is not bwrap; None while there is none. Its CPU tells a computing JVM from a hung one (bwrap's
    own processes only wait)."""
    best = None
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as fh:
                head, _, rest = fh.read().rpartition(")")
            fields = rest.split()
        except OSError:
            continue
        if int(fields[3]) != leader or head.endswith("(bwrap"):
            continue
        started = int(fields[19])
        if best is None or started < best[0]:
            best = (started, int(name))
    return best[1] if best else None
