"""Starting ImageJ: the private X server it needs and the command line of its JVM.

ImageJ 1 needs a display even in batch mode: each task starts its own :class:`Xvfb`. The JVM is
started by :func:`launcher_argv` (Debian's ``imagej`` jar with a JRE, or a Fiji installation) with
a private home and temp folder so that several tasks share a node. :func:`bioformats_version`
names the Bio-Formats jar an ImageJ 1 launch is given (the attempt summary records it; validate too);
:func:`series_reader` builds ``SciopsSeries.java`` against it (files of many series: the metadata once).

ImageJ 1 under Xvfb opens a modal dialog on a macro error and waits; its text is written nowhere. The
JVM gets :func:`dialog_agent`, a Java agent that prints each dialog shown (``SciopsDialogs.java`` beside
this module), so the runner fails the image with the dialog's text at once. Where the agent cannot be
built (a Java without its compiler module), :func:`open_dialogs` names the dialog from the X server.
"""
from __future__ import annotations

import hashlib
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
import zipfile

from .hygiene import die_with

#: Heaps up to this size get the serial garbage collector (imagej1 launcher).
SERIAL_GC_MAX_MB = 8192


class Xvfb:
    """A private X server for one task: ImageJ 1 needs a display even in batch mode.

    ``-displayfd`` lets Xvfb pick a free display number itself, so concurrent
    tasks on one node never race for the same one (``xvfb-run -a`` does race).
    """

    def __init__(self, binary="Xvfb"):
        self.binary = binary
        self.proc = None
        self.display = None
        self._rfd = None

    def start(self):
        """Start the server; :meth:`wait` for its display (the runner prepares the JVM's job meanwhile)."""
        rfd, wfd = os.pipe()
        self.proc = subprocess.Popen(
            [self.binary, "-displayfd", str(wfd), "-screen", "0", "640x480x24", "-nolisten", "tcp"],
            pass_fds=(wfd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=die_with(os.getpid()),
        )
        os.close(wfd)
        self._rfd = rfd
        return self

    def wait(self):
        """The display (``:N``) once the server accepts connections."""
        if self.display is not None:
            return self.display
        rfd, self._rfd = self._rfd, None
        data = b""
        deadline = time.time() + 20
        while not data.endswith(b"\n") and time.time() < deadline:
            ready, _, _ = select.select([rfd], [], [], 0.5)
            if ready:
                chunk = os.read(rfd, 64)
                if not chunk:
                    break
                data += chunk
        os.close(rfd)
        if not data.strip():
            self.stop()
            raise RuntimeError("Xvfb did not start (is the xvfb package installed?)")
        self.display = ":" + data.decode().strip()
        return self.display

    def stop(self):
        if self._rfd is not None:
            os.close(self._rfd)
            self._rfd = None
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


#: The dialog watcher's source (a Java agent: see its head comment), shipped with this package.
AGENT_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "SciopsDialogs.java")
#: The QC overlay drawer (driver.ijm's saveQc calls it), compiled into the agent's jar against ImageJ's jar.
QC_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "SciopsQc.java")
#: A line the agent prints for each dialog ImageJ shows: ``SCIOPS_DIALOG <tab> title <tab> text``.
DIALOG_TAG = "SCIOPS_DIALOG"
#: Compiling the agent takes 1-2 s (once per node, user and java); never more than this.
AGENT_COMPILE_S = 120


def dialog_agent(java="java", cache_dir=None, ij_jar=None):
    """``(jar, None)``: the dialog watcher for ``java``, compiled on first use; ``(None, why)`` when it cannot be.

    The jar is cached in the temp folder (``sciops-dialogs-<uid>-<hash of source and java>.jar``), so one
    node compiles it once per user (:func:`_compiled_jar`). With ``ij_jar`` (ImageJ 1's jar) it also holds
    ``SciopsQc`` (the QC overlay drawer), compiled against it; when that does not compile, the watcher alone
    (the driver then draws overlays with ImageJ commands).
    """
    manifest = "Premain-Class: SciopsDialogs\n"
    if ij_jar and os.path.isfile(ij_jar):
        jar, why = _compiled_jar(java, [AGENT_SOURCE, QC_SOURCE], [ij_jar], "sciops-dialogs", manifest, cache_dir)
        if jar:
            return jar, None
    return _compiled_jar(java, [AGENT_SOURCE], [], "sciops-dialogs", manifest, cache_dir)


#: The Bio-Formats series reader's source (``SciopsSeries.java``: see its head comment), shipped with this package.
SERIES_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "SciopsSeries.java")


def ij_jar_of(launcher):
    """ImageJ 1's jar a launch runs (Debian's ``imagej`` package's by default)."""
    return launcher.get("ij_jar", "/usr/share/java/ij.jar")


def bioformats_jar(launcher):
    """The Bio-Formats jar an ImageJ 1 launch is given (``<plugins_dir>/plugins/bioformats_package.jar``), or None."""
    if launcher.get("kind", "imagej1") != "imagej1" or not launcher.get("plugins_dir"):
        return None
    path = os.path.join(launcher["plugins_dir"], "plugins", "bioformats_package.jar")
    return path if os.path.isfile(path) else None


def series_reader(launcher, cache_dir=None):
    """``(jars, None)``: what an ImageJ 1 JVM needs on its class path to read series through
    ``SciopsSeries`` (the metadata once, a memo, the reader kept open); ``(None, why)`` when it cannot be built.

    Compiled against the launcher's own ij.jar and Bio-Formats jar (their paths, sizes and mtimes are in the
    cache key, so a new Bio-Formats gets a new build). Fiji and an ImageJ 1 without Bio-Formats get
    ``(None, why)``: their JVMs open series with the Bio-Formats Importer, as before.
    """
    bf = bioformats_jar(launcher)
    if bf is None:
        return None, "no Bio-Formats jar of ImageJ 1's own (Fiji opens series with its Importer)"
    ij_jar = ij_jar_of(launcher)
    jar, why = _compiled_jar(launcher.get("java", "java"), [SERIES_SOURCE], [ij_jar, bf], "sciops-series", "",
                             cache_dir)
    return ([jar, bf], None) if jar else (None, why)


def _compiled_jar(java, sources, classpath, prefix, manifest, cache_dir=None):
    """``(jar, None)``: ``sources`` compiled with ``java``'s own compiler module (``jdk.compiler``, which
    Debian's headless JRE carries) to Java 8 class files against ``classpath``, or ``(None, why)``.

    Cached in the temp folder as ``<prefix>-<uid>-<hash>.jar`` (the hash of the source, the java and each
    class-path jar's path, size and mtime), so one node compiles it once per user; a cached jar is used only
    when it is this user's own regular file and nobody else may write it.
    """
    cache_dir = cache_dir or tempfile.gettempdir()
    java_path = os.path.realpath(shutil.which(java) or java)
    try:
        source = b""
        for path in sources:
            with open(path, "rb") as fh:
                source += fh.read() + b"\0"
        deps = "".join("%s:%d:%d;" % (p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in classpath)
    except OSError as exc:
        return None, "no source or class path: %s" % exc
    digest = hashlib.sha256(source + b"\0" + java_path.encode() + deps.encode()).hexdigest()[:16]
    jar = os.path.join(cache_dir, "%s-%d-%s.jar" % (prefix, os.getuid(), digest))
    if _own_file(jar):
        return jar, None
    build = tempfile.mkdtemp(prefix=prefix + "-build-", dir=cache_dir)
    try:
        classes = os.path.join(build, "classes")
        cp = ["-cp", os.pathsep.join(classpath)] if classpath else []
        try:
            proc = subprocess.run([java, "-m", "jdk.compiler/com.sun.tools.javac.Main", "--release", "8", "-nowarn",
                                   *cp, "-d", classes, *sources], capture_output=True, text=True,
                                  timeout=AGENT_COMPILE_S)
        except (OSError, subprocess.SubprocessError) as exc:
            return None, "could not compile it: %s" % exc
        if proc.returncode != 0:
            said = " ".join((proc.stderr or proc.stdout).split())[:300]
            return None, "could not compile it with %s (exit %d): %s" % (java, proc.returncode, said)
        tmp = os.path.join(build, "built.jar")
        with zipfile.ZipFile(tmp, "w") as z:
            z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n%s\n" % manifest)
            for name in sorted(os.listdir(classes)):
                z.write(os.path.join(classes, name), name)
        os.chmod(tmp, 0o644)
        try:
            os.replace(tmp, jar)    # atomic: a task compiling beside this one replaces it by the same bytes
        except OSError as exc:
            return None, "could not keep it as %s: %s" % (jar, exc)
        return (jar, None) if _own_file(jar) else (None, "%s is not this user's own file" % jar)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _own_file(path):
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return os.path.isfile(path) and not os.path.islink(path) and st.st_uid == os.getuid() and not st.st_mode & 0o022


#: The X server's top-level windows that are ImageJ's and AWT's own, not a dialog.
QUIET_WINDOWS = re.compile(r"^(?:ij-ImageJ|sun-awt-.*|FocusProxy|Content window)$")


def open_dialogs(display):
    """The titles of the windows shown on ``display`` (a task's own Xvfb) other than ImageJ's hidden own:
    under ``-batch`` ImageJ shows no image or table, so a window there is a dialog waiting for a click.
    Uses ``xwininfo`` (Debian's x11-utils); [] without it."""
    exe = shutil.which("xwininfo")
    if not exe or not display:
        return []
    try:
        out = subprocess.run([exe, "-root", "-children"], env={"DISPLAY": display}, capture_output=True,
                             text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    titles = re.findall(r'^\s*0x[0-9a-f]+ "(.*)": \(', out, re.MULTILINE)
    # An untitled window is AWT's own (a frame's owner, an input-method window), never a dialog ImageJ
    # shows: a Grid Engine run of the suite saw one and failed a good image as 'showed a dialog ""'.
    return [t for t in titles if t.strip() and not QUIET_WINDOWS.match(t)]


def launcher_argv(launcher, xmx, home, tmp, driver, jobfile, agent=None, series=None, memo_dir=None):
    """The command that starts one JVM running ``driver`` over ``jobfile``.

    ``-port0`` turns off ImageJ's single-instance listener, and a private
    ``user.home`` / ``java.io.tmpdir`` per task keeps IJ_Prefs and temp files apart,
    so several tasks can share a node. ``agent``: the dialog watcher's jar (:func:`dialog_agent`; imagej1).
    ``series``: the jars of :func:`series_reader` (imagej1), put on the class path with ImageJ's own
    (``-cp``, main class ``ij.ImageJ``: what ``-jar ij.jar`` runs), ``-Dsciops.series=yes`` telling the
    macros that ``SciopsSeries`` is there and ``-Dsciops.bfmemo`` where its memo files go (``memo_dir``).
    """
    props = ["-Duser.home=" + home, "-Djava.io.tmpdir=" + tmp]
    kind = launcher.get("kind", "imagej1")
    if kind == "imagej1" and launcher.get("plugins_dir"):   # Bio-Formats (scripts/bioformats.sh)
        props.append("-Dplugins.dir=" + launcher["plugins_dir"])
    if kind == "fiji":
        return [launcher["fiji"], "--headless", "--console", "--mem=%dm" % xmx] + props + [
            "--", "-port0", "-batch", driver, jobfile]
    if kind == "imagej1":
        # the serial collector: a task's JVM has a core or two and a heap of a few GB, and the default's
        # parallel GC threads take CPU from the JVM beside it. Measured on this 2-core machine, count_nuclei
        # on BBBC002 ×3 (150 images, one JVM): 10.4-10.7 s against 11.3 s, 10 % less CPU; two JVMs of
        # 1,000 tiny images at once: 23.9 s against 24.5-29.6 s. (C1 only, -XX:TieredStopAtLevel=1, was
        # faster on tiny images but 50 % slower on BBBC002's: not used.)
        gc = ["-XX:+UseSerialGC"] if xmx <= SERIAL_GC_MAX_MB else []
        if agent:
            props += ["-javaagent:" + agent, "-Dsciops.agent=yes"]   # the driver asks it for a shared ROI Manager
        ij_jar = ij_jar_of(launcher)
        main = ["-jar", ij_jar]
        if series:
            props += ["-Dsciops.series=yes", "-Dsciops.bfmemo=" + (memo_dir or "")]
            main = ["-cp", os.pathsep.join([ij_jar, *series]), "ij.ImageJ"]
        return [launcher.get("java", "java"), "-Xmx%dm" % xmx] + gc + props + main + [
            "-port0", "-batch", driver, jobfile]
    raise ValueError("unknown launcher kind %r (use 'imagej1' or 'fiji')" % kind)


def bioformats_version(launcher):
    """The version of the Bio-Formats jar an ImageJ 1 launch is given (its manifest), or None.

    The manifest is among a jar's first entries: read from their local headers (~1 ms), not through
    the 45 MB jar's central directory of ~20,000 entries (zipfile: 0.19 s, once per task).
    """
    import struct
    import zlib

    if launcher.get("bioformats_version") or not launcher.get("plugins_dir"):
        return launcher.get("bioformats_version")
    path = os.path.join(launcher["plugins_dir"], "plugins", "bioformats_package.jar")
    text = None
    try:
        with open(path, "rb") as fh:
            for _ in range(4):
                head = fh.read(30)
                if len(head) < 30 or head[:4] != b"PK\x03\x04":
                    break
                _, _, flags, method, _, _, _, csize, _, nlen, xlen = struct.unpack("<4sHHHHHIIIHH", head)
                name = fh.read(nlen)
                fh.seek(xlen, 1)
                if flags & 8:   # sizes follow the data: cannot skip this entry
                    break
                if name == b"META-INF/MANIFEST.MF":
                    data = fh.read(csize)
                    text = (zlib.decompressobj(-15).decompress(data) if method == 8 else data).decode("utf-8", "replace")
                    break
                fh.seek(csize, 1)
        if text is None:
            import zipfile

            with zipfile.ZipFile(path) as jar:
                text = jar.read("META-INF/MANIFEST.MF").decode("utf-8", "replace")
    except (OSError, KeyError, ValueError, zlib.error, struct.error):
        return None
    return next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("Implementation-Version:")), None)
