"""Find the render engine and the Debian SuperTuxKart assets; say what to install when something is missing.

Engine: pysupertuxkart 1.1.2 (module ``pystk``) built from its sdist by ``make render-deps``
(``stk_vqa/render/install_engine.sh``); assets: Debian's ``supertuxkart-data`` (STK 1.4), read through the
label-aware overlay that :mod:`stk_vqa.render.shaders` generates into the cache folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from stk_vqa.render.shaders import DEBIAN_DATA_DIR, build_overlay

ENGINE_PACKAGE, ENGINE_VERSION = "PySuperTuxKart", "1.1.2"
INSTALL_HINT = (
    "stk-vqa render needs the SuperTuxKart engine and game data; install both (once, ~6-9 min: it builds\n"
    "pysupertuxkart 1.1.2 from source and caches the wheel) with:\n"
    "  make render-deps        # = stk_vqa/render/install_engine.sh .venv/bin/python (apt + build + shaders)"
)

# Race tracks of the course dataset's splits; all are in Debian's supertuxkart-data 1.4.
RACE_TRACKS = (
    "abyss",
    "black_forest",
    "candela_city",
    "cocoa_temple",
    "cornfield_crossing",
    "fortmagma",
    "gran_paradiso_island",
    "hacienda",
    "lighthouse",
    "mines",
    "minigolf",
    "olivermath",
    "ravenbridge_mansion",
    "sandtrack",
    "scotland",
    "snowmountain",
    "snowtuxpeak",
    "stk_enterprise",
    "volcano_island",
    "xr591",
    "zengarden",
)


class GameNotInstalled(RuntimeError):
    """The engine or the Debian game data is missing; the message says what to install."""


def engine_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(ENGINE_PACKAGE)
    except PackageNotFoundError:
        return None


def check_installed(data_dir: Path = DEBIAN_DATA_DIR) -> None:
    """Raise :class:`GameNotInstalled` naming what is missing (the engine, the Debian data, or both)."""
    missing = []
    found = engine_version()
    if found != ENGINE_VERSION:
        missing.append(
            f"the engine {ENGINE_PACKAGE} {ENGINE_VERSION} (module pystk)"
            + (f"; found version {found}" if found else "")
        )
    if not (Path(data_dir) / "tracks").is_dir() or not (Path(data_dir) / "karts").is_dir():
        missing.append(f"the game data at {data_dir} (Debian package supertuxkart-data)")
    if missing:
        raise GameNotInstalled("missing " + " and ".join(missing) + "\n" + INSTALL_HINT)


def available_tracks(data_dir: Path = DEBIAN_DATA_DIR) -> list[str]:
    """Race tracks present in the game data (the course's tracks that the data holds)."""
    return [t for t in RACE_TRACKS if (Path(data_dir) / "tracks" / t / "track.xml").is_file()]


def available_karts(data_dir: Path = DEBIAN_DATA_DIR) -> list[str]:
    """Kart names present in the game data (Debian's dfsg package lacks beastie and hexley)."""
    return sorted(p.name for p in (Path(data_dir) / "karts").iterdir() if (p / "kart.xml").is_file())


def kart_display_names(data_dir: Path = DEBIAN_DATA_DIR) -> dict[str, str]:
    """Display name (what the engine reports, e.g. ``Pepper``) -> kart folder name (``sara_the_racer``).

    The course's ``karts`` lists hold folder names; the engine's ``WorldState`` gives display names.
    """
    names = {}
    for kart in available_karts(data_dir):
        text = (Path(data_dir) / "karts" / kart / "kart.xml").read_text(errors="replace")
        match = re.search(r'<kart\b[^>]*?\bname\s*=\s*"([^"]*)"', text, re.DOTALL)
        if match:
            names[match.group(1)] = kart
    return names


def prepare_datadir(cache_dir: Path | None = None, data_dir: Path = DEBIAN_DATA_DIR) -> Path:
    """The folder the engine reads its assets from (built once; see :func:`stk_vqa.render.shaders.build_overlay`)."""
    return build_overlay(cache_dir, data_dir)
