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
