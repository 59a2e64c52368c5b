"""Bounds on what a user hands SciOps: YAML that cannot explode, values shown short, text without controls.

* :func:`load_yaml`: ``project.yaml`` and ``sciops run -p`` values. PyYAML's ``SafeLoader`` builds no
  Python objects, but it expands aliases (a 1 KB "billion laughs" file grows to gigabytes) and
  composes nested collections by recursion (a 3,000-deep list is a RecursionError). The loader here
  refuses anchors and aliases outright (a run default never needs one), stops past
  :data:`MAX_DEPTH` levels, and the text is refused past a byte cap before it is parsed at all.
* :func:`brief`: a value as an error message shows it (``reprlib``: long strings and big
  collections cut), so that no error repeats a huge value.
* :func:`control_chars`: the characters a name or an argument may not hold (C0, DEL, C1, and the
  Unicode line and paragraph separators that ``str.splitlines`` breaks lines at).

Kept free of heavy imports: the ``sciops`` command uses it.
"""
from __future__ import annotations

import reprlib
import unicodedata
from typing import Any

import yaml

from sciops.errors import ConfigError

#: project.yaml larger than this is refused unread (a project's run defaults are a few hundred bytes).
MAX_YAML_BYTES = 64 * 1024
#: Nesting of YAML collections (a run default is at most a mapping of mappings: ``cluster: {...}``).
MAX_DEPTH = 16

_brief = reprlib.Repr()
_brief.maxstring = 80
_brief.maxother = 80
_brief.maxlong = 40
_brief.maxlist = _brief.maxtuple = _brief.maxdict = _brief.maxset = 6
_brief.maxlevel = 3


def brief(value: Any) -> str:
    """``repr(value)`` cut to a readable size (``'aaaa...aaaa'``, ``[1, 2, ...]``)."""
    return _brief.repr(value)


class Refused(yaml.YAMLError):
    """A bound of :class:`BoundedLoader` crossed (``problem`` says which)."""

    def __init__(self, problem: str, mark=None):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses anchors and aliases and collections nested past :data:`MAX_DEPTH`."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise Refused("an alias (*name): anchors and aliases are not accepted", self.peek_event().start_mark)
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise Refused("an anchor (&name): anchors and aliases are not accepted", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise Refused(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(data: bytes | str, field: str, *, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """Parse YAML with :class:`BoundedLoader`; ConfigError on ``field`` for text too large, not UTF-8 or not
    YAML, naming the bound crossed and the position (never echoing the text)."""
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > max_bytes:
        raise ConfigError([(field, f"is {size:,} bytes, more than the {max_bytes:,} bytes accepted; keep only "
                                   "the run defaults in it")])
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError([(field, "is not UTF-8 text; write it as key: value lines or remove it")]) from None
    try:
        return yaml.load(data, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader, bounded
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([(field, f"is not valid YAML{where} ({getattr(exc, 'problem', None) or 'syntax'}); fix "
                                   "it or remove it")]) from None


#: Line and paragraph separators that are not C0/C1 controls but break lines all the same.
_SEPARATORS = {"\u2028", "\u2029", "\u0085"}


def control_chars(text: str) -> list[str]:
    """The control characters in ``text`` (C0 0x00-0x1f, DEL, C1 0x80-0x9f, U+2028/U+2029), as ``U+XXXX``."""
    found = {c for c in text if unicodedata.category(c) == "Cc" or c in _SEPARATORS}
    return [f"U+{ord(c):04X}" for c in sorted(found)]
