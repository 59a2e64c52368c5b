"""Lab macros as scientists write them: what headless ImageJ cannot do, and Fiji's ``#@`` parameters.

A macro written for the desktop often asks a person something: ``waitForUser``, a ``Dialog``,
``getDirectory("Choose a folder")``, ``File.openDialog``, ``getNumber``... Under Xvfb nobody
answers, and ImageJ 1 waits for ever (until the runner's stall timeout kills it, image after
image). :func:`dialog_calls` finds those calls in the source, outside comments and string
literals, so that ``validate`` refuses the macro with the line and what to write instead,
before any cluster exists.

Fiji's script parameters (``#@ File input``, ``#@ int (value=5) radius``) are not ImageJ 1
syntax: ImageJ 1 stops at the first such line without a word. :func:`headless_source`
rewrites each one, on the same line, into an assignment from the argument string SciOps
hands the macro (``name=value`` lines), so the macro runs unchanged in ImageJ 1 and keeps its
line numbers. ``input`` and ``output`` are given for every image; any other parameter comes
from ``macro_args`` (whose values may name ``{input}``, ``{output}``, ``{name}``, ``{stem}``)
or from its ``value=`` default.

No library parses the ImageJ macro language from Python; the scanner below is the language's
lexical layer only (comments, strings, a parameter line), about 100 lines.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

#: ``getDirectory(...)`` arguments that name a folder instead of asking for one.
DIRECTORY_WORDS = {"home", "startup", "imagej", "plugins", "macros", "luts", "temp", "image", "file", "cwd",
                   "downloads", "preferences", "default"}
_ARG_HINT = 'a macro argument: read it from getArgument() (see docs/lab-macros.md) or a "#@" parameter'
#: (pattern on code with comments and strings blanked, what it does, what to write instead)
DIALOGS = [
    (r"(?<![.\w])waitForUser\s*\(", "waitForUser() waits for a person to click OK",
     "remove it: nobody is there to click (print() a note to the log instead)"),
    (r"(?<![.\w])Dialog\s*\.\s*\w+\s*\(", "Dialog.* builds a dialog for a person to fill in",
     "take each field as " + _ARG_HINT),
    (r"(?<![.\w])getDir(?:ectory)?\s*\(", "getDirectory() asks for a folder",
     "use the output folder SciOps gives (output=...) or the input image's folder (File.getParent(input))"),
    (r"\bFile\s*\.\s*openDialog\s*\(", "File.openDialog() asks for a file",
     "open the image SciOps gives (input=...)"),
    (r"(?<![.\w])open\s*\(\s*\)", "open() without a path asks for a file", "open(input), input from the macro's arguments"),
    (r"(?<![.\w])get(?:Number|String|Boolean)\s*\(", "getNumber/getString/getBoolean ask a person for a value",
     "take the value as " + _ARG_HINT),
    (r"(?<![.\w])showMessage(?:WithCancel)?\s*\(", "showMessage() opens a message box",
     "print() the message: it reaches the task's log"),
    (r"(?<![.\w])showText\s*\(", "showText() opens a text window", "print() it, or File.saveString() into the output folder"),
]
_DIALOG_RES = [(re.compile(p), what, fix) for p, what, fix in DIALOGS]
PARAM_LINE = re.compile(r"^(\s*)#@(\w*)\s*(.*?)\s*$")
PARAM_TYPE = re.compile(r"^([A-Za-z][\w.]*)\s*")
PARAM_NAME = re.compile(r"^([A-Za-z_]\w*)\s*")
NUMBER_TYPES = {"int", "integer", "long", "short", "byte", "float", "double", "number", "biginteger", "bigdecimal"}
TEXT_TYPES = {"string", "file", "character", "char", "colorrgb"}
BOOL_TYPES = {"boolean"}
PARAM_FUNCTION = "sciopsParam_"


@dataclass(frozen=True)
class Param:
    line: int
    type: str
    name: str
    default: str | None


class MacroProblem(ValueError):
    """What stops a macro from running headless: ``problems`` is a list of (line, message)."""

    def __init__(self, problems: list[tuple[int, str]]):
        self.problems = problems
        super().__init__("; ".join(f"line {n}: {m}" for n, m in problems))


def blank_comments_and_strings(text: str) -> str:
    """``text`` with every comment and string literal's content replaced by spaces (quotes and line
    breaks kept), so that a call named inside either is not seen as code."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j, n - 1) if j >= n else j
            out.append(c + " " * (j - i - 1) + (text[j] if j < n and text[j] == c else ""))
            i = j + 1 if j < n and text[j] == c else j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def dialog_calls(text: str) -> list[tuple[int, str]]:
    """(line, message) for each call that would open a dialog, outside comments and strings."""
    code = blank_comments_and_strings(text)
    found = []
    for rx, what, fix in _DIALOG_RES:
        for m in rx.finditer(code):
            if what.startswith("getDirectory"):
                arg = re.match(r"\s*([\"'])(\w*)\1\s*\)", text[m.end():])
                if arg and arg.group(2).lower() in DIRECTORY_WORDS:
                    continue   # getDirectory("temp") etc. name a folder: no dialog
            line = code.count("\n", 0, m.start()) + 1
            call = text[m.start():m.end()].rstrip("( \t")
            found.append((line, f"{call}(...): {what}, and headless ImageJ would wait for ever; {fix}"))
    return sorted(found)


def _attrs(text: str) -> tuple[str, str] | None:
    """``(attributes, rest)`` when ``text`` starts with a parenthesised attribute list (quotes may hold
    parentheses: ``label="Size (px)"``); ``("", text)`` when it does not; None when it is not closed."""
    if not text.startswith("("):
        return "", text
    quote = None
    for i, c in enumerate(text):
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c == ")":
            return text[1:i], text[i + 1:].strip()
    return None


def _attr_pairs(attrs: str) -> dict[str, str]:
    """``label="A, b", value=3`` → {label: "A, b", value: "3"} (commas and ``=`` inside quotes kept)."""
    pairs, key, buf, quote, depth = {}, None, [], None, 0
    for c in attrs + ",":
        if quote:
            if c == quote:
                quote = None
            else:
                buf.append(c)
        elif c in "\"'":
            quote = c
        elif c in "{[":
            depth += 1
            buf.append(c)
        elif c in "}]":
            depth -= 1
            buf.append(c)
        elif c == "=" and key is None and depth == 0:
            key, buf = "".join(buf).strip(), []
        elif c == "," and depth == 0:
            if key:
                pairs[key] = "".join(buf).strip()
            key, buf = None, []
        else:
            buf.append(c)
    return pairs


def _declaration(decl: str) -> tuple[str, str, str] | None:
    """``#@ Type (attrs) name`` or ``#@ Type name (attrs)`` → (type, name, attrs)."""
    m = PARAM_TYPE.match(decl)
    if not m:
        return None
    first = _attrs(decl[m.end():])
    if first is None:
        return None
    attrs, rest = first
    n = PARAM_NAME.match(rest)
    if not n:
        return None
    second = _attrs(rest[n.end():])
    if second is None or second[1]:
        return None
    return m.group(1), n.group(1), attrs + "," + second[0]


#: Where ImageJ's macro language ends a line. Not str.splitlines, which also breaks at U+2028, U+0085 and
#: other separators a comment may hold: the ``#@`` rewrite then numbered the lines differently from the
#: text it rewrote and replaced a code line (the same split for reading and rewriting, here).
_LINE_BREAK = re.compile(r"\r\n|\n|\r")


def macro_lines(text: str) -> list[str]:
    """The macro's lines as ImageJ counts them."""
    return _LINE_BREAK.split(text)


def params(text: str) -> list[Param]:
    """The ``#@`` input parameters; MacroProblem for a line that is not one SciOps can give."""
    found, problems = [], []
    for number, line in enumerate(macro_lines(text), 1):
        m = PARAM_LINE.match(line)
        if not m:
            continue
        kind, decl = m.group(2), m.group(3)
        if kind == "output" or not decl:
            continue   # an output parameter (#@output): the macro saves its results itself
        d = None if kind else _declaration(decl)
        if d is None:
            problems.append((number, f"cannot read the script parameter {line.strip()!r}; write it as "
                                     "'#@ Type name' or '#@ Type (value=...) name'"))
            continue
        declared, name, attrs = d
        typ = declared.split(".")[-1].lower()
        if typ not in NUMBER_TYPES | TEXT_TYPES | BOOL_TYPES:
            problems.append((number, f"script parameter {name!r} is a {declared}: SciOps gives "
                                     "text, numbers and true/false only (an image: open it from the 'input' "
                                     "path; a service: not available headless)"))
            continue
        found.append(Param(number, typ, name, _attr_pairs(attrs).get("value")))
    if problems:
        raise MacroProblem(problems)
    return found


def missing_params(text: str, given: set[str]) -> list[tuple[int, str]]:
    """Parameters with no default that neither SciOps (input, output) nor ``macro_args`` give."""
    return [(p.line, f"script parameter {p.name!r} has no default value; add {p.name}: <value> to macro_args "
                     f"(a file or folder may be '{{input}}' or '{{output}}')")
            for p in params(text) if p.default is None and p.name not in given | {"input", "output"}]


def _literal(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def headless_source(text: str) -> str:
    """``text`` with each ``#@`` line replaced, on the same line, by an assignment from the arguments."""
    found = {p.line: p for p in params(text)}
    if not found and "#@" not in text:
        return text
    lines = macro_lines(text)
    for i, line in enumerate(lines):
        p = found.get(i + 1)
        if p is None:
            if PARAM_LINE.match(line):
                lines[i] = "// " + line   # #@output: a comment to ImageJ 1
            continue
        raw = f"{PARAM_FUNCTION}({_literal(p.name)}, {_literal(p.default or '')})"
        value = (f"parseFloat({raw})" if p.type in NUMBER_TYPES
                 else f"({raw} == \"true\")" if p.type in BOOL_TYPES else raw)
        lines[i] = f"{p.name} = {value};  // was: {line.strip()}"
    lines.append(f"""
// added by SciOps: the "#@" parameters above, from the name=value lines of getArgument()
function {PARAM_FUNCTION}(key, dflt) {{
    given = split(getArgument(), "\\n");
    for (i = 0; i < given.length; i++)
        if (startsWith(given[i], key + "="))
            return substring(given[i], lengthOf(key) + 1);
    return dflt;
}}""")
    return "\n".join(lines)
