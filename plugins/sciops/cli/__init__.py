"""The ``sciops`` command a scientist runs on a LAN machine."""
