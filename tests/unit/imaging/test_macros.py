"""Lab macros: dialogs found statically (not in comments or strings), ``#@`` parameters rewritten for ImageJ 1."""
from __future__ import annotations

import pytest

from sciops.imaging.macros import MacroProblem, dialog_calls, headless_source, missing_params, params

# (macro source, the lines validate must name; [] = runs headless)
MACROS = [
    ('open(getArgument());\nwaitForUser("Draw the ROI, then OK");\nrun("Measure");', [2]),
    ('Dialog.create("Settings");\nDialog.addNumber("sigma", 2);\nDialog.show();\ns = Dialog.getNumber();', [1, 2, 3, 4]),
    ('dir = getDirectory("Choose a Directory");\nlist = getFileList(dir);', [1]),
    ('dir = getDir("Pick one");', [1]),
    ('t = getDirectory("temp"); h = getDirectory("home");\nsaveAs("Results", t + "r.csv");', []),
    ('path = File.openDialog("Select a file");\nopen(path);', [1]),
    ('open();\nrun("8-bit");', [1]),
    ('n = getNumber("How many?", 3);\nname = getString("Name", "x");\nok = getBoolean("Sure?");', [1, 2, 3]),
    ('showMessage("Done");\nshowMessageWithCancel("Go on?");', [1, 2]),
    # in comments and strings: not calls
    ('// waitForUser("old way");\n/* Dialog.create("x");\n getNumber("y", 1); */\nprint("then waitForUser(...)");', []),
    ("s = 'showMessage(\"x\")'; // getDirectory(\"Choose\")\nprint(s);", []),
    ('print("a \\" quote, then getNumber(");\nx = 1;', []),
    ('s = "unterminated;\nwaitForUser("x");', [2]),
    ('myWaitForUser();\nfunction myWaitForUser() { print("no dialog"); }', []),
]


@pytest.mark.parametrize("source,lines", MACROS, ids=[f"macro{i}" for i in range(len(MACROS))])
def test_dialogs_are_found_outside_comments_and_strings(source, lines):
    found = dialog_calls(source)
    assert [line for line, _ in found] == lines, found
    for _, message in found:
        assert "headless ImageJ would wait for ever" in message and ";" in message   # what it does; what to do


def test_script_parameters_become_assignments_on_the_same_lines():
    source = ("#@ File input\n#@ File (style=\"directory\") output\n#@ int (value=5) radius\n"
              "#@ Double (label=\"Sigma (px), value=9\", value=1.5) sigma\n#@ boolean (value=true) watershed\n"
              "#@ String (choices={\"Otsu\", \"Li\"}, value=\"Li\") method\n#@output Integer count\n"
              "print(input + radius);\n")
    got = [(p.line, p.type, p.name, p.default) for p in params(source)]
    assert got == [(1, "file", "input", None), (2, "file", "output", None), (3, "int", "radius", "5"),
                   (4, "double", "sigma", "1.5"), (5, "boolean", "watershed", "true"), (6, "string", "method", "Li")]
    out = headless_source(source).split("\n")
    assert out[0].startswith('input = sciopsParam_("input", "");')
    assert out[2].startswith('radius = parseFloat(sciopsParam_("radius", "5"));')
    assert out[4].startswith('watershed = (sciopsParam_("watershed", "true") == "true");')
    assert out[6].startswith("// #@output") and out[7] == "print(input + radius);"   # line numbers kept
    assert "function sciopsParam_(key, dflt) {" in out[-7]
    assert headless_source("print(1);\n") == "print(1);\n"


def test_parameters_without_a_value_must_come_from_macro_args():
    source = "#@ File input\n#@ File mask\n#@ int threshold\n#@ int (value=3) radius\n"
    assert [(line, msg.split(" has")[0]) for line, msg in missing_params(source, {"threshold"})] \
        == [(2, "script parameter 'mask'")]
    assert "add mask: <value> to macro_args" in missing_params(source, set())[0][1]
    with pytest.raises(MacroProblem) as err:
        params("#@ ImagePlus imp\n#@ UIService ui\n")
    assert [line for line, _ in err.value.problems] == [1, 2]
    assert "open it from the 'input' path" in err.value.problems[0][1]


def test_the_argument_a_macro_gets():
    from sciops_task import argument_for

    args = {"sigma": "2", "mask": "{output}/mask.tif"}
    assert argument_for(None, "/in/a b.tif", "/out/a", args).split("\n") == [
        "input=/in/a b.tif", "output=/out/a", "mask=/out/a/mask.tif", "sigma=2"]
    assert argument_for("{input},{output},{sigma}", "/in/a.tif", "/out/a", args) == "/in/a.tif,/out/a,2"
    assert argument_for("file=[{name}] stem={stem}", "/in/x/p1.ome.tif", "/o", {}) == "file=[p1.ome.tif] stem=p1.ome"


def test_a_macro_that_uses_a_shipped_one_changes_identity_with_it(tmp_path, monkeypatch):
    """cell_death runs percent_positive: a change in either is a new macro for the processed-images index."""
    from sciops.run import project

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "base.ijm").write_text("print(1);\n")
    monkeypatch.setattr(project, "MACRO_DIR", shipped)
    user = tmp_path / "user.ijm"
    user.write_text("// @sciops uses: base.ijm\nrunMacro('base.ijm');\n")
    plain = tmp_path / "plain.ijm"
    plain.write_text("print(2);\n")
    before = project.macro_sha256(user)
    assert project.macro_sha256(plain) == project.sha256(plain)      # no uses: the file's own hash, as before
    (shipped / "base.ijm").write_text("print(3);\n")
    assert project.macro_sha256(user) != before
