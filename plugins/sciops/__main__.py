"""``python -m sciops``: the storage commands alone (the ``sciops`` command, :mod:`sciops.cli.main`, has them all).

    python -m sciops sync-up   LOCAL_PROJECT_DIR [--project NAME] [--delete] [--verify]
    python -m sciops sync-down PROJECT RUN_ID LOCAL_PROJECT_DIR
    python -m sciops ls        [PROJECT]

The storage root and the AWS connection come from ``--storage-root`` / ``--conn-id`` or
``SCIOPS_STORAGE_ROOT`` / ``SCIOPS_AWS_CONN_ID`` (an Airflow connection id: define it as
``AIRFLOW_CONN_<ID>`` or in Airflow's metadata DB). Exit status 2 on bad input, 1 on a
failed transfer (run it again to resume).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sciops", description=__doc__.split("\n\n")[0])
    p.add_argument("--storage-root", help="s3://bucket[/prefix] or a folder (default: $SCIOPS_STORAGE_ROOT)")
    p.add_argument("--conn-id", help="Airflow AWS connection id (default: $SCIOPS_AWS_CONN_ID or aws_default)")
    p.add_argument("--workers", type=int, default=16, help="parallel transfers (default 16)")
    p.add_argument("--quiet", action="store_true", help="only the summary line")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("sync-up", help="a LAN project folder -> the storage root (output/ is not sent)")
    up.add_argument("local_dir")
    up.add_argument("--project", help="project name in the storage root (default: the folder's name)")
    up.add_argument("--delete", action="store_true", help="delete files in the storage root that are not local "
                    "(lists the bucket)")
    up.add_argument("--verify", action="store_true", help="list the bucket instead of trusting the sync manifest "
                    "that the last sync up left (use after changing the project in the bucket with other tools)")
    down = sub.add_parser("sync-down", help="output/<run_id>/ of a project -> LOCAL/output/<run_id>/")
    down.add_argument("project")
    down.add_argument("run_id")
    down.add_argument("local_dir")
    ls = sub.add_parser("ls", help="projects in the storage root, or the runs of one project")
    ls.add_argument("project", nargs="?")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")

    from sciops.run.names import SAFE_NAME
    from sciops.errors import ConfigError, StorageError
    from sciops.storage.root import get_storage

    try:
        storage = get_storage(args.storage_root, args.conn_id)
        if args.cmd == "sync-up":
            from sciops.storage.sync import sync_up

            project = args.project or Path(args.local_dir).expanduser().resolve().name
            if not SAFE_NAME.match(project):
                raise ConfigError([("project", f"{project!r}: use letters, digits, '.', '_' or '-' (give --project)")])
            stats = sync_up(storage, args.local_dir, project, delete=args.delete, verify=args.verify,
                            workers=args.workers)
        elif args.cmd == "sync-down":
            from sciops.storage.sync import sync_down

            stats = sync_down(storage, args.project, args.run_id, args.local_dir, workers=args.workers)
        else:
            names = storage.runs(args.project) if args.project else storage.projects()
            print("\n".join(names))
            return 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from sciops.storage.sync import summary_lines

    print("\n".join(summary_lines(stats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
