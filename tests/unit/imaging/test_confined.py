"""sciops.imaging.imagej.confined: the sandbox a worker's macros run in is on unless an admin turns it off."""
from __future__ import annotations

import pytest

from sciops import MACRO_DIR
from sciops.errors import ConfigError
from sciops.imaging import imagej
from sciops_node import sandbox

LAUNCHER = {"kind": "imagej1", "java": "java", "ij_jar": "/usr/share/java/ij.jar", "xvfb": "Xvfb"}


def test_on_by_default(monkeypatch):
    monkeypatch.delenv("SCIOPS_MACRO_SANDBOX", raising=False)
    monkeypatch.setattr(sandbox, "unusable", lambda spec: None)
    spec = imagej.confined(LAUNCHER)["sandbox"]
    assert (spec["kind"], spec["bwrap"], spec["read"]) == ("bwrap", "bwrap", [str(MACRO_DIR)])
    assert imagej.confined(None) is None


def test_off_only_when_said(monkeypatch):
    monkeypatch.setenv("SCIOPS_MACRO_SANDBOX", "off")
    assert imagej.confined(LAUNCHER) == LAUNCHER
    monkeypatch.setenv("SCIOPS_MACRO_SANDBOX", "firejail")
    with pytest.raises(ConfigError, match="SCIOPS_MACRO_SANDBOX='firejail'"):
        imagej.confined(LAUNCHER)


def test_a_bwrap_that_cannot_run_fails_validate_naming_the_setting(monkeypatch):
    monkeypatch.delenv("SCIOPS_MACRO_SANDBOX", raising=False)
    monkeypatch.setattr(sandbox, "_probed", {})
    monkeypatch.setattr(sandbox, "binary", lambda spec: None)
    with pytest.raises(ConfigError, match="bubblewrap.*SCIOPS_MACRO_SANDBOX=off"):
        imagej.confined(LAUNCHER)
