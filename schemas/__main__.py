"""Write the JSON Schema files: ``python -m schemas [--check] [DIRECTORY]``."""

import argparse
import sys
from pathlib import Path

from schemas.export import SCHEMA_DIR, stale_schemas, write_schemas


def main(argv: list[str] | None = None) -> int:
    """Write or check the schema files; return the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m schemas",
        description="Generate the JSON Schema file of every oddwatch record.",
    )
    parser.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=SCHEMA_DIR,
        help=f"directory of the schema files (default: {SCHEMA_DIR})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit with status 1 if a file is missing or outdated",
    )
    arguments = parser.parse_args(argv)

    if arguments.check:
        stale = stale_schemas(arguments.directory)
        for path in stale:
            print(f"outdated or missing: {path}", file=sys.stderr)
        if stale:
            print("regenerate them with: python -m schemas", file=sys.stderr)
        return 1 if stale else 0
    for path in write_schemas(arguments.directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
