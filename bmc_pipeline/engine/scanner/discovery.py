"""Which files a scan reads: the configured directories and name patterns under a root."""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path


def candidate_files(
    root: Path, directories: list[str], patterns: list[str]
) -> tuple[list[Path], list[str]]:
    """Files to scan, and problems met on the way (unreadable directories, links not followed,
    names that match but are not regular files: a named pipe would block the scan forever)."""
    names = set()
    for pat in patterns:
        names.add(pat)
        for suffix in (".gz", ".zst"):
            names.add(pat + suffix)
        if pat.endswith(".json"):
            names.add(pat[: -len(".json")] + ".ndjson")
            names.add(pat[: -len(".json")] + ".jsonl")
    out: dict[str, Path] = {}
    problems: list[str] = []

    def consider(p: Path) -> None:
        if not any(fnmatch.fnmatch(p.name, pat) for pat in names):
            return
        try:
            mode = p.lstat().st_mode
        except OSError as exc:
            problems.append(f"{p}: cannot be read ({exc.strerror})")
            return
        if stat.S_ISLNK(mode):
            problems.append(f"{p}: a symbolic link, not followed")
        elif stat.S_ISDIR(mode):
            pass  # a directory with a file-like name; os.walk goes into it
        elif not stat.S_ISREG(mode):
            problems.append(f"{p}: not a regular file (a named pipe, socket or device), not read")
        else:
            out[str(p.resolve())] = p

    def onerror(err: OSError) -> None:
        problems.append(f"{err.filename}: cannot read directory ({err.strerror})")

    for d in directories:
        base = (root / d) if d not in (".", "") else root
        if not base.is_dir():
            continue
        if d in (".", ""):
            for entry in sorted(base.iterdir()):
                consider(entry)
            continue
        for dirpath, dirnames, filenames in os.walk(base, onerror=onerror, followlinks=False):
            dirnames.sort()
            for fn in sorted(filenames):
                consider(Path(dirpath) / fn)
    return sorted(out.values()), problems
