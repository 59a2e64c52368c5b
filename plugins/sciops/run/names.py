"""Name rules shared by the config and the CLI (kept free of heavy imports: the CLI starts fast)."""
from __future__ import annotations

import re

#: Project names become folder names, S3 prefixes, job names and shell words.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
