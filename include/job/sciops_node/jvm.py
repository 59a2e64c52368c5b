"""Starting ImageJ: the private X server it needs and the command line of its JVM.

ImageJ 1 needs a display even in batch mode: each task starts its own :class:`Xvfb`. The JVM is
started by :func:`launcher_argv` (Debian's ``imagej`` jar with a JRE, or a Fiji installation) with
a private home and temp folder so that several tasks share a node. :func:`bioformats_version`
names the Bio-Formats jar an ImageJ 1 launch is given (the attempt summary records it; validate too).
"""
from __future__ import annotations

import os
import select
import subprocess
import time

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


def launcher_argv(launcher, xmx, home, tmp, driver, jobfile):
    """The command that starts one JVM running ``driver`` over ``jobfile``.

    ``-port0`` turns off ImageJ's single-instance listener, and a private
    ``user.home`` / ``java.io.tmpdir`` per task keeps IJ_Prefs and temp files apart,
    so several tasks can share a node.
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
        return [launcher.get("java", "java"), "-Xmx%dm" % xmx] + gc + props + [
            "-jar", launcher.get("ij_jar", "/usr/share/java/ij.jar"), "-port0", "-batch", driver, jobfile]
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
