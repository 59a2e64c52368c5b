"""sciops_node.jvm: the JVM's command line."""
from __future__ import annotations

import pytest

from sciops_node import jvm


def test_launcher_argv_imagej1_and_fiji():
    ij = jvm.launcher_argv({"kind": "imagej1", "java": "/usr/bin/java", "ij_jar": "/ij.jar"}, 700, "/h", "/t",
                           "/d.ijm", "/job.txt")
    assert ij == ["/usr/bin/java", "-Xmx700m", "-XX:+UseSerialGC", "-Duser.home=/h", "-Djava.io.tmpdir=/t", "-jar",
                  "/ij.jar", "-port0", "-batch", "/d.ijm", "/job.txt"]
    fiji = jvm.launcher_argv({"kind": "fiji", "fiji": "/opt/Fiji.app/ImageJ-linux64"}, 700, "/h", "/t", "/d.ijm", "/j")
    assert fiji[:4] == ["/opt/Fiji.app/ImageJ-linux64", "--headless", "--console", "--mem=700m"]
    assert fiji[-4:] == ["-port0", "-batch", "/d.ijm", "/j"]
    with pytest.raises(ValueError, match="unknown launcher"):
        jvm.launcher_argv({"kind": "napari"}, 1, "", "", "", "")


def test_the_dialog_watcher_goes_into_the_imagej1_command_line():
    ij = jvm.launcher_argv({"kind": "imagej1", "java": "java", "ij_jar": "/ij.jar"}, 700, "/h", "/t", "/d.ijm", "/j",
                           agent="/tmp/sciops-dialogs-0-ab.jar")
    assert ij[ij.index("-jar") - 2:ij.index("-jar")] == ["-javaagent:/tmp/sciops-dialogs-0-ab.jar", "-Dsciops.agent=yes"] and ij[-5:-3] == ["/ij.jar", "-port0"]


def test_the_series_reader_goes_on_the_imagej1_class_path():
    ij = jvm.launcher_argv({"kind": "imagej1", "java": "java", "ij_jar": "/ij.jar"}, 700, "/h", "/t", "/d.ijm", "/j",
                           series=["/tmp/sciops-series-0-ab.jar", "/p/plugins/bioformats_package.jar"],
                           memo_dir="/w/bfmemo")
    assert ij[ij.index("-cp"):] == ["-cp", "/ij.jar:/tmp/sciops-series-0-ab.jar:/p/plugins/bioformats_package.jar",
                                    "ij.ImageJ", "-port0", "-batch", "/d.ijm", "/j"]
    assert "-Dsciops.series=yes" in ij and "-Dsciops.bfmemo=/w/bfmemo" in ij and "-jar" not in ij


def test_the_series_reader_is_built_against_the_launchers_bioformats(imagej, tmp_path):
    """Compiled against ImageJ 1's own jars (scripts/bioformats.sh's), once; Fiji has none of its own here."""
    import zipfile

    jars, why = jvm.series_reader(imagej, cache_dir=str(tmp_path))
    assert why is None and jars[1] == jvm.bioformats_jar(imagej), why
    with zipfile.ZipFile(jars[0]) as z:
        assert "SciopsSeries.class" in z.namelist()
    assert jvm.series_reader(imagej, cache_dir=str(tmp_path)) == (jars, None)
    assert jvm.series_reader({"kind": "fiji", "fiji": "/opt/Fiji.app/ImageJ-linux64"})[0] is None


def test_the_dialog_watcher_is_compiled_once_and_only_a_private_jar_is_used(tmp_path):
    import os
    import zipfile

    jar, why = jvm.dialog_agent("java", cache_dir=str(tmp_path))
    assert why is None and os.path.basename(jar).startswith("sciops-dialogs-%d-" % os.getuid())
    with zipfile.ZipFile(jar) as z:
        assert "Premain-Class: SciopsDialogs" in z.read("META-INF/MANIFEST.MF").decode()
        assert "SciopsDialogs.class" in z.namelist()
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(jar)]          # no build folder left
    built = os.stat(jar).st_mtime_ns
    assert jvm.dialog_agent("java", cache_dir=str(tmp_path)) == (jar, None) and os.stat(jar).st_mtime_ns == built
    os.chmod(jar, 0o666)                    # anyone could have replaced it: built again, not used
    assert jvm.dialog_agent("java", cache_dir=str(tmp_path)) == (jar, None) and os.stat(jar).st_mode & 0o777 == 0o644
    jar2, why = jvm.dialog_agent("/nonexistent/java", cache_dir=str(tmp_path))
    assert jar2 is None and "could not compile it" in why
