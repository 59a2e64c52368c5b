"""What the ``sciops`` command prints, made safe for a terminal, and the URLs it sends a password to.

Image names, project folders, run ids, macro output and task logs are anyone's text: an escape
sequence in one (``ESC ]`` set the title, ``ESC [2J`` clear the screen, OSC 52 write the clipboard,
a CR that overwrites the line before) must reach the terminal as visible characters, never as
a command to it. :func:`shown` removes ANSI escape sequences and shows every other control
character as ``\\xNN``/``\\uNNNN`` (line breaks and tabs kept where a text has lines).
"""
from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import urlsplit

#: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), and two-character ESC sequences; their C1 forms too.
_ANSI = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
                   r"|\x1b[@-Z\\-_]")


def _visible(c: str) -> str:
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def shown(text: object, lines: bool = False) -> str:
    """``text`` with no escape sequence and no control character left (``lines``: keep ``\\n`` and ``\\t``)."""
    keep = "\n\t" if lines else ""
    text = _ANSI.sub("", str(text))
    return "".join(_visible(c) if c not in keep and (unicodedata.category(c) == "Cc" or c in "\u2028\u2029")
                   else c for c in text)


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): traffic that never leaves this machine."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cleartext_problem(url: str, insecure_http: bool) -> str | None:
    """Why the password may not be sent to ``url`` (None when it may): https, or http to this machine only."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"--api-url {shown(url)!r} is not an http(s) URL of Airflow (e.g. https://airflow.lab.example)"
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not insecure_http:
        return (f"--api-url {shown(url)!r} is plain http to another machine: the password would cross the network "
                "in clear. Use https, or pass --insecure-http if this network is yours alone")
    return None
