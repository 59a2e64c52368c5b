"""How a chunk runner drives its JVMs: the job file, the driver's protocol, stalls, timeouts and chaining.

One JVM runs ``driver.ijm`` over a job file (the JVM's secret, the macro, its arguments, then one line per image:
path, output folder, argument; for a Bio-Formats unit its series, channel and the TIFF to extract it to), inside
the macro sandbox when the launcher asks for one (``sciops_node.sandbox``). The driver prints
``SCIOPS_<secret>_VERSION``, then ``..._BEGIN``/``..._END`` around each image (``sciops_node.protocol``: a line
without the secret is the macro's, whatever it says); everything else is the macro's (measurements, and ImageJ's
own error lines: :data:`IMAGEJ_ERRORS`). :meth:`JvmSession.run_jvm` reads those lines and judges: an END is an
image's end (``ChunkRunner.judge``; failed when an input changed meanwhile: ``protocol.InputGuard``); a dialog
(ImageJ 1 opens a modal one on a macro error and waits for ever: the dialog watcher, ``SciopsDialogs.java``, prints
it as a ``SCIOPS_DIALOG`` line), an error line with an idle JVM, an idle JVM for ``stall_seconds`` or an image
longer than ``image_timeout_s`` kills the JVM; a JVM killed from outside stops the task.

Chaining (local backend): when the driver begins its last image, :meth:`JvmSession.extend` hands
it the array's next unclaimed chunk (``<job>.more<N>``), or tells it to end (``<job>.end<N>``).

:class:`JvmSession` is a part of ``sciops_node.chunk.ChunkRunner`` (its base class), kept apart
because it is the half that talks to the JVM; the attributes it uses are set in
``ChunkRunner.__init__``.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
import time

from . import qc, sandbox
from .claims import release_claim, try_claim
from .contract import heap_mb, image_output_dir, images_dir, task_log_path, unit_parts
from .hygiene import cpu_ticks, die_with, macro_env
from .jvm import DIALOG_TAG, launcher_argv, open_dialogs
from .protocol import IMAGEJ_ERRORS, InputGuard, Lines, dialog_reason, imagej_error, job_header, new_secret
from .protocol import reason as input_reason
from .units import argument_for

# the last three are protocol's, imported from here by tests
__all__ = ["JvmSession", "make_folders", "IMAGEJ_ERRORS", "imagej_error", "dialog_reason"]

#: A JVM that uses less CPU than this share of one core counts as idle.
IDLE_CPU_SHARE = 0.03
#: After an error line, how long an idle JVM may sit before we call it stuck.
ERROR_GRACE_S = 2.0
#: scancel (and a node's shutdown) signals every process of a task at once: the JVM, or the Xvfb under it,
#: can end a moment before this runner's own handler runs. A JVM that ends under an image waits this
#: long for that handler before the image is blamed.
STOP_GRACE_S = 1.0
#: A JVM ended by one of these without our asking was stopped from outside, not by its image.
OUTSIDE_SIGNALS = {-signal.SIGKILL: "SIGKILL", -signal.SIGTERM: "SIGTERM", -signal.SIGHUP: "SIGHUP",
                   -signal.SIGINT: "SIGINT"}
#: Lines a macro prints for one image that its log.txt keeps (a runaway print loop stays bounded).
LOG_LINES_MAX = 10_000


def make_folders(folders):
    """Make each folder (its parent exists); one made meanwhile by the driver is fine."""
    for folder in folders:
        try:
            os.mkdir(folder)
        except OSError:   # made by the driver; or it cannot be, and the driver's makeDirectory fails too
            pass


class JvmSession:
    """The JVM half of a :class:`~sciops_node.chunk.ChunkRunner` (see the module docstring)."""

    def failure_reason(self, errors):
        """An image's reason from ImageJ's error lines: the first, unless one says ImageJ ran out of memory."""
        oom = [e for e in errors if imagej_error(e) == "out of memory"]
        if oom:
            memory = int(self.m.memory_mb)
            return "out of memory: %s (a %d MB heap, of memory %d MB: raise memory)" % (oom[0], heap_mb(memory), memory)
        return errors[0]

    def unit_lines(self, images, fresh, key, parents, folders):
        """The job-file lines of ``images``: path, output folder, argument (and Bio-Formats series).

        ``fresh``: their output folders are made later (``parents``/``folders`` collect them); else any
        stale outputs of a killed attempt are removed now. ``key`` keeps Bio-Formats extracts apart.
        """
        out_lines = []
        template, args = self.m.macro_argument, self.m.macro_args
        for k, img in enumerate(images):
            out = image_output_dir(self.work, img)
            if fresh:
                parents.add(os.path.dirname(out))
                folders.append(out)
            else:
                shutil.rmtree(out, ignore_errors=True)  # stale outputs of a killed attempt
                os.makedirs(out)
            rel, series, channel = unit_parts(img)
            path = os.path.join(self.m.input_dir, rel)
            opened, how = None, ""
            if series is not None:   # the driver reads it through Bio-Formats into a plain TIFF
                channel = channel or self.m.channel or "all"
                extract = os.path.join(self.scratch, "units", "%s-%d.tif" % (key, k))
                opened = {"input": extract, "source": path, "series": series, "channel": channel}
                how = "\t%d\t%s\t%s" % (series, channel, extract)
            # the argument's line breaks as \x1f: the job file is one image per line
            out_lines.append("%s\t%s\t%s\t%s%s\n" % (path, out, argument_for(template, path, out, args, opened)
                                                      .replace("\n", "\x1f"), qc.flag(self.m.qc_images, img),
                                                      how))
        return "".join(out_lines)

    def extend(self, jobfile, step):
        """Chaining: hand the JVM the next chunk of the array that no runner holds and that has images left.

        The chunk is claimed (``status/task-NNNN.claim``) and its images written to ``<job>.more<step>``, which
        the driver reads after its current lines; its statuses, tables and counts are the chunk's own, as if
        its task had run it. ``<job>.end<step>`` when no chunk is left. Returns ``(runner, images)`` or None.
        A JVM start and its JIT's warm-up cost seconds (see ``AUTO_TASKS_PER_SLOT`` in sciops.run.chunking): a slot's runner
        that goes on with the array's next chunk in its warm JVM saves both, and the slots end together
        however long each chunk turned out.
        """
        while self.chain:
            task = self.chain.pop(0)
            if not try_claim(self.work, task, self.task_id):
                continue   # its own runner, or another slot's, has it
            child = type(self)(self.m, task, self.attempt, self.log)   # a ChunkRunner
            child.by, child.jvm_starts = {"by": self.task_id}, self.jvm_starts   # in status lines: whose JVM ran it
            images = child.prepare()
            if not images:
                release_claim(self.work, task)
                continue
            parents, folders = set(), []
            text = self.unit_lines(images, child.fresh, "%d-%d" % (self.jvm_starts, task), parents, folders)
            for parent in sorted(parents):
                os.makedirs(parent, exist_ok=True)
            # the images' folders, while the JVM ends the image it runs (the driver makes one it reaches first)
            threading.Thread(target=make_folders, args=(folders,), daemon=True).start()
            tmp = jobfile + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, "%s.more%d" % (jobfile, step))
            self.children[task] = child
            if task not in self.chained:
                self.chained.append(task)
            self.note("chained task %d: its %d image(s) go on in this JVM", task, len(images))
            try:
                with open(task_log_path(self.m.run_dir, task, self.attempt), "a", encoding="utf-8") as fh:
                    fh.write("[sciops %s] %d image(s) of this task run in task %d's JVM (chained): see "
                             "task-%04d.attempt-%d.log\n" % (time.strftime("%H:%M:%S"), len(images), self.task_id,
                                                              self.task_id, self.attempt))
            except OSError:
                pass
            return child, images
        open("%s.end%d" % (jobfile, step), "w").close()
        return None

    def end_children(self):
        """The JVM has ended: release the chunks it was handed; one with images left goes back to the chain
        (a next JVM of this runner may take it again, or its own task runs it)."""
        for task, child in list(self.children.items()):
            child.write_counts(force=True)
            release_claim(self.work, task)
            if self.chain is not None and any(img not in child.counts for img in child.images):
                self.chain.insert(0, task)
        self.children = {}

    def run_jvm(self, images, xvfb=None):
        """Start one JVM on ``images``; return {image: status record} of those it finished.

        On a task's first attempt's first JVM (no status line yet: no output folder can hold a killed
        attempt's or JVM's files) the images' output folders are made by a thread while the JVM starts, and the driver
        makes one it reaches first: 500 mkdirs took 0.26 s here (0.5 ms each on this ext4; more on
        NFS), longer than the JVM's own start (0.2 s), before every task's first image.
        """
        self.jvm_starts += 1
        home = os.path.join(self.scratch, "home")
        tmp = os.path.join(self.scratch, "tmp")
        # A killed JVM leaves prefs locks and temp files: start each JVM from clean dirs.
        for d in (home, tmp):
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
        jobfile = os.path.join(self.scratch, "job-%d.txt" % self.jvm_starts)
        parents, folders = set(), []
        # only the attempt's first JVM: a later one reruns images an earlier JVM left half-written
        fresh = self.fresh and self.jvm_starts == 1
        secret = new_secret()   # the driver's lines carry it; the driver deletes the job file before any macro runs
        fd = os.open(jobfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as fh:
            fh.write(job_header(secret, self.m.macro_path, self.m.macro_args))
            fh.write(self.unit_lines(images, fresh, "%d" % self.jvm_starts, parents, folders))
        driver = Lines(secret)
        guard = InputGuard(self.m.input_dir)
        guard.add(os.path.join(self.m.input_dir, unit_parts(img)[0]) for img in images)
        chaining = bool(self.chain)
        if chaining:   # the driver waits for <job>.more<N> or <job>.end<N> after its lines (see extend)
            open(jobfile + ".chain", "w").close()
        os.makedirs(os.path.join(self.scratch, "units"), exist_ok=True)
        for parent in sorted(parents):
            os.makedirs(parent, exist_ok=True)
        maker = threading.Thread(target=make_folders, args=(folders,), daemon=True)
        maker.start()
        xmx = heap_mb(int(self.m.memory_mb))
        memo = self.m.bioformats_memo if self.series_jars else None
        if memo:
            try:
                os.makedirs(memo, exist_ok=True)
            except OSError as exc:   # the series reader still keeps each file open: it only parses it a JVM
                self.note("no memo files (%s): each JVM parses its files' metadata", exc)
                memo = None
        argv = launcher_argv(self.m.launcher, xmx, home, tmp, self.m.driver_path, jobfile, agent=self.agent,
                             series=self.series_jars, memo_dir=memo)
        confine = self.m.launcher.get("sandbox")
        if confine:   # sciops_node.sandbox: what the JVM sees
            # the macro's and driver's folders (work/job): a shipped macro runMacro's its sibling (cell_death)
            readable = [self.m.input_dir, os.path.dirname(self.m.macro_path), os.path.dirname(self.m.driver_path),
                        *confine.get("read", ()), *(self.series_jars or ()),
                        *sandbox.launcher_paths(self.m.launcher, self.agent)]
            writable = [self.scratch, images_dir(self.work), *([memo] if memo else [])]
            argv = sandbox.wrap(confine, argv, readable, writable, self.scratch)
        self.note("JVM %d on %d image(s): %s", self.jvm_starts, len(images), " ".join(argv))
        display = xvfb.wait() if xvfb else None
        env = macro_env(os.environ, home, tmp, display)
        # without the dialog watcher, an idle JVM's display is looked at for a dialog (at most every ERROR_GRACE_S)
        look_at = display if display and not self.agent else None
        looked_at = 0.0
        proc = self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True, preexec_fn=die_with(os.getpid()))
        lines = queue.Queue()

        def pump():
            for raw in proc.stdout:
                lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        # the driver names an image by its output folder (a file's series share its path); by its path
        # in the older protocol
        by_path = {os.path.join(self.m.input_dir, img): img for img in images}
        by_path.update({image_output_dir(self.work, img): img for img in images})
        owner_of = {}           # image -> the runner of its chunk, for images of chunks handed on (chaining)
        last = images[-1] if images else None   # the last image of the lines the driver has
        step = 1
        finished = {}           # this chunk's images
        finished_all = {}       # and those of the chunks handed on
        current = None          # image being processed
        t_begin = 0.0
        errors = []             # error lines seen since BEGIN
        printed = []            # the macro's other lines since BEGIN (its log.txt)
        last_activity = time.time()
        last_error_at = None
        jvm_pid = None if confine else proc.pid   # in the sandbox: found once it runs (sandbox.jvm_pid)
        ticks = cpu_ticks(proc.pid) or 0 if jvm_pid else 0
        tick_hz = os.sysconf("SC_CLK_TCK")
        last_sample = time.time()
        tail = []              # last lines, to say why a JVM that never began an image stopped
        eof = False
        kill_reason = None
        while not eof:
            try:
                line = lines.get(timeout=0.25)
            except queue.Empty:
                line = ""
            now = time.time()
            if line is None:
                eof = True
            elif line:
                last_activity = now
                self.log.write(driver.loggable(line) + "\n")   # never the secret: a macro may read this log
                tail = (tail + [driver.loggable(line).strip()])[-5:]
                tag, parts = driver.parse(line)
                if tag == "BEGIN" and len(parts) > 1 and parts[1] not in by_path:
                    self.note("the driver began %s, which is no image of this JVM: ignored", parts[1])
                    tag = None
                if tag is None:
                    parts = line.split("\t")
                    tag = parts[0] if parts[0] == DIALOG_TAG else None
                if tag == "VERSION" and len(parts) > 1:
                    self.version = parts[1]
                elif tag == "BEGIN" and len(parts) > 1:
                    current = by_path[parts[1]]
                    t_begin, errors, last_error_at, printed = now, [], None, []
                    owner_of.get(current, self).begin(current)
                    if current == last and chaining:
                        handed = self.extend(jobfile, step)
                        step += 1
                        if handed:
                            child, more = handed
                            last = more[-1]
                            guard.add(os.path.join(self.m.input_dir, unit_parts(img)[0]) for img in more)
                            for img in more:
                                owner_of[img] = child
                                by_path[os.path.join(self.m.input_dir, img)] = img
                                by_path[image_output_dir(self.work, img)] = img
                elif tag == DIALOG_TAG:
                    # a modal dialog (see SciopsDialogs.java): ImageJ waits for a click that never comes
                    reason = dialog_reason(parts)
                    if current is not None:
                        errors.append(reason)
                        if len(printed) < LOG_LINES_MAX:
                            printed.append(line)
                    kill_reason = ("failed", self.failure_reason(errors) if current is not None else reason)
                elif tag == "END" and current is not None:
                    # the JVM's own clock for the macro's time: its lines reach us in bursts (ImageJ's
                    # output is buffered), so the time between their arrivals missed up to a third of it
                    seconds = int(parts[2]) / 1000.0 if len(parts) > 2 and parts[2].isdigit() else now - t_begin
                    drawn = {}
                    if len(parts) > 4 and parts[3].isdigit():   # the QC overlay: its time and what it drew
                        drawn = {"qc_seconds": int(parts[3]) / 1000.0, "qc": parts[4]} if parts[4] else {}
                    owner = owner_of.get(current, self)
                    changed = guard.check(os.path.join(self.m.input_dir, unit_parts(current)[0]))
                    if changed:   # first: it is the image's reason
                        errors.insert(0, input_reason(changed))
                    finished_all[current] = owner.judge(current, seconds, errors, printed, drawn)
                    if owner is self:
                        finished[current] = finished_all[current]
                    current = None
                elif current is not None:
                    if imagej_error(line):
                        errors.append(line.strip())
                        last_error_at = now
                    if len(printed) < LOG_LINES_MAX:   # log.txt: all the image's lines, ImageJ's errors too
                        printed.append(line)
            if eof:
                break
            # CPU sample once a second: a JVM busy computing is not stalled.
            if now - last_sample >= 1.0:
                if jvm_pid is None:
                    jvm_pid = sandbox.jvm_pid(proc.pid)
                    ticks = cpu_ticks(jvm_pid) or 0 if jvm_pid else 0
                t = cpu_ticks(jvm_pid) if jvm_pid else None
                if t is not None:
                    if (t - ticks) / tick_hz > IDLE_CPU_SHARE * (now - last_sample):
                        last_activity = now
                    ticks = t
                last_sample = now
            if kill_reason:
                pass
            elif current is not None and now - t_begin > self.timeout:
                kill_reason = ("timeout", "no result after %.0f s (image_timeout_s)" % self.timeout)
            elif current is not None and last_error_at and now - last_activity > ERROR_GRACE_S:
                kill_reason = ("failed", self.failure_reason(errors))
            elif look_at and now - last_activity > ERROR_GRACE_S and now - looked_at > ERROR_GRACE_S:
                looked_at = now
                titles = open_dialogs(look_at)
                if titles:
                    kill_reason = ("failed", "ImageJ showed a dialog %s and waited for a click (its text is known "
                                   "only to the dialog watcher, which this node could not build: see the task's "
                                   "log)" % ", ".join('"%s"' % t for t in titles))
                    if current is not None:
                        errors.append(kill_reason[1])
                        kill_reason = ("failed", self.failure_reason(errors))
            elif now - last_activity > self.stall:
                kill_reason = ("failed", "ImageJ stalled: no output and an idle CPU for %.0f s "
                               "(a macro error opens a modal dialog in ImageJ 1)" % self.stall)
            if kill_reason:
                self.note("killing JVM: %s", kill_reason[1])
                self.kill(proc)
                break
        self.log.flush()
        rc = proc.wait()
        maker.join()
        try:
            finished = self.jvm_ended(rc, current, t_begin, kill_reason, errors, tail, finished,
                                      owner_of.get(current, self))
            self.inputs_swept(guard, [*images, *owner_of], owner_of, finished)
            return finished
        finally:
            self.end_children()

    def jvm_ended(self, rc, current, t_begin, kill_reason, errors, tail, finished, owner):
        """What run_jvm returns once its JVM ended: the image in flight (of ``owner``'s chunk) recorded."""
        if current is not None and rc != 0 and not kill_reason:
            time.sleep(STOP_GRACE_S)   # a stop of the whole task raises SystemExit here (see STOP_GRACE_S)
        if current is not None and rc in OUTSIDE_SIGNALS and not kill_reason:
            # Killed from outside (kill -9, the OOM killer, a node going down): not this
            # image's fault the first time. Stop here and let the scheduler resubmit the
            # chunk; a second kill under the same image marks it failed.
            how = OUTSIDE_SIGNALS[rc]
            if not owner.earlier_deaths().get(current):
                self.note("JVM killed (%s) from outside while processing %s: stopping", how, current)
                self.error = "JVM killed (%s) from outside while processing %s" % (how, current)
                self.interrupted = True
                return finished
            kill_reason = ("failed", "JVM killed (%s) twice while processing this image (out of memory?)" % how)
        if current is not None:
            if kill_reason:
                status, error = kill_reason
            else:
                status = "failed"
                error = (self.failure_reason(errors) if errors else
                         "ImageJ exited (code %s) while processing this image" % rc)
            rec = owner.record(current, status, time.time() - t_begin, error)
            if owner is self:
                finished[current] = rec
        elif kill_reason and not finished:
            # Stalled (or a dialog) before the first image began: a broken macro or launcher.
            how = "stalled" if kill_reason[1].startswith("ImageJ stalled") else "stopped (%s)" % kill_reason[1]
            self.error = "JVM %s before starting any image; last output: %s" % (how, " | ".join(tail))
            self.note("%s", self.error)
            return None
        if not finished and rc is not None and not kill_reason:
            self.error = "JVM exited with code %s before finishing any image; last output: %s" % (rc, " | ".join(tail))
            self.note("%s", self.error)
            return None
        return finished

    @staticmethod
    def kill(proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:   # it ended on its own meanwhile
            pass
