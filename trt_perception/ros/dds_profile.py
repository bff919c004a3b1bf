"""The nodes' default Fast DDS profile: ``config/dds/fastdds_large_images.xml`` (32 MiB shared memory).

With Fast DDS's default 512 KiB shared-memory segment, best-effort camera frames above ~0.5 MB are
mostly lost between processes. The nodes point Fast DDS at the shipped profile before ``rclpy.init``
unless the user chose a profile (either variable below set, empty for Fast DDS's defaults) or another
RMW than Fast DDS.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from trt_perception.spec import package_config_dirs

# Fast DDS 2.x (Humble, Jazzy) reads the first, Fast DDS 3.x (Kilted and later) the second
# (and warns that the first is deprecated).
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
# The library each major version installs: Fast DDS 3 renamed libfastrtps to libfastdds.
FAST_DDS_LIBRARIES = {"libfastrtps.so": PROFILE_VARIABLES[0], "libfastdds.so": PROFILE_VARIABLES[1]}
LARGE_IMAGES_PROFILE = "fastdds_large_images.xml"
FAST_DDS_RMW = "rmw_fastrtps_cpp"


def large_images_profile() -> Path | None:
    """The shipped profile file (source tree or installed share folder), or ``None`` when absent."""
    for folder in package_config_dirs("dds"):
        candidate = folder / LARGE_IMAGES_PROFILE
        if candidate.is_file():
            return candidate
    return None


def profile_variables(environ: MutableMapping[str, str] = os.environ) -> tuple[str, ...]:
    """The profile variable(s) the installed Fast DDS reads, found from its library in the
    ``AMENT_PREFIX_PATH`` prefixes; both names when that cannot be told."""
    found = {
        variable
        for prefix in environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
        if prefix
        for library, variable in FAST_DDS_LIBRARIES.items()
        if (Path(prefix) / "lib" / library).exists()
    }
    return tuple(name for name in PROFILE_VARIABLES if name in found) or PROFILE_VARIABLES


def use_large_images_profile(environ: MutableMapping[str, str] = os.environ) -> str:
    """Point the installed Fast DDS's profile variable (``profile_variables``) at the shipped profile
    unless the user set either variable (an empty value keeps Fast DDS's defaults) or uses another RMW.

    Must run before ``rclpy.init`` (Fast DDS reads the variables when the participant is created).
    Returns a line for the log saying which profile applies.
    """
    chosen = [f"{name}={environ[name]!r}" for name in PROFILE_VARIABLES if name in environ]
    if chosen:
        return f"Fast DDS profile from the environment (empty: Fast DDS defaults): {', '.join(chosen)}"
    rmw = environ.get("RMW_IMPLEMENTATION", "")
    if rmw not in ("", FAST_DDS_RMW):
        return f"RMW_IMPLEMENTATION={rmw}: no Fast DDS profile set"
    profile = large_images_profile()
    if profile is None:
        return (
            f"{LARGE_IMAGES_PROFILE} not found: Fast DDS keeps its default transports "
            "(best-effort images above ~512 KB are mostly lost)"
        )
    variables = profile_variables(environ)
    for name in variables:
        environ[name] = str(profile)
    return (
        f"Fast DDS profile {profile} (32 MiB shared memory for large images; "
        f"set {' or '.join(variables)} to use another)"
    )
