"""Find pystk2 and the Debian SuperTuxKart assets; build the data folder pystk2 expects.

pysupertuxkart2 0.7.4 (module ``pystk2``, an STK 1.5 build) downloads ~600 MB of assets on first use unless
``SUPERTUXKART_DATADIR`` names a folder whose ``data/`` holds the assets and a ``supertuxkart.1.5`` marker.
Debian's ``supertuxkart-data`` (STK 1.4) has the same assets; we link them into a small cache folder and add the
two things 1.5 looks for (the version marker and a ``classic`` skin, which 1.4 calls ``peach``).
"""

from __future__ import annotations

import os
from pathlib import Path

DEBIAN_DATA_DIR = Path("/usr/share/games/supertuxkart/data")
APT_PACKAGES = ("supertuxkart-data", "libegl1", "libegl-mesa0", "libgl1-mesa-dri", "libgl1")
INSTALL_HINT = (
    "stk-vqa render needs the SuperTuxKart game:\n"
    "  sudo apt-get install -y " + " ".join(APT_PACKAGES) + "\n"
    "  pip install -e '.[render]'        # pysupertuxkart2==0.7.4 (module pystk2)"
)

# Race tracks of the course dataset's splits; all are in Debian's supertuxkart-data 1.4.
RACE_TRACKS = (
    "abyss", "black_forest", "candela_city", "cocoa_temple", "cornfield_crossing", "fortmagma",
    "gran_paradiso_island", "hacienda", "lighthouse", "mines", "minigolf", "olivermath", "ravenbridge_mansion",
    "sandtrack", "scotland", "snowmountain", "snowtuxpeak", "stk_enterprise", "volcano_island", "xr591",
    "zengarden",
)


class GameNotInstalled(RuntimeError):
    """pystk2 or the Debian game data is missing; the message says what to install."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stk_vqa" / "pystk2_datadir"


def check_installed(data_dir: Path = DEBIAN_DATA_DIR) -> None:
    """Raise :class:`GameNotInstalled` naming what is missing (pystk2, the Debian data, or both)."""
    import importlib.util

    missing = []
    if importlib.util.find_spec("pystk2") is None:
        missing.append("the Python package pysupertuxkart2 (module pystk2)")
    if not (data_dir / "tracks").is_dir() or not (data_dir / "karts").is_dir():
        missing.append(f"the game data at {data_dir} (Debian package supertuxkart-data)")
    if missing:
        raise GameNotInstalled("missing " + " and ".join(missing) + "\n" + INSTALL_HINT)


def available_tracks(data_dir: Path = DEBIAN_DATA_DIR) -> list[str]:
    """Race tracks present in the game data (the course's tracks that the data holds)."""
    return [t for t in RACE_TRACKS if (data_dir / "tracks" / t / "track.xml").is_file()]


def available_karts(data_dir: Path = DEBIAN_DATA_DIR) -> list[str]:
    """Kart names present in the game data (Debian's dfsg package lacks beastie and hexley)."""
    return sorted(p.name for p in (data_dir / "karts").iterdir() if (p / "kart.xml").is_file())


def prepare_datadir(cache_dir: Path | None = None, data_dir: Path = DEBIAN_DATA_DIR) -> Path:
    """Create (once) the folder for ``SUPERTUXKART_DATADIR`` that points pystk2 at Debian's assets."""
    root = Path(cache_dir or default_cache_dir())
    data = root / "data"
    marker = data / "supertuxkart.1.5"
    if marker.is_file():
        return root
    data.mkdir(parents=True, exist_ok=True)
    for entry in data_dir.iterdir():
        link = data / entry.name
        if entry.name == "skins" or link.exists() or link.is_symlink():
            continue
        link.symlink_to(entry)
    skins = data / "skins"
    skins.mkdir(exist_ok=True)
    for skin in (data_dir / "skins").iterdir():
        if not (skins / skin.name).exists():
            (skins / skin.name).symlink_to(skin)
    if not (skins / "classic").exists():
        (skins / "classic").symlink_to(data_dir / "skins" / "peach")
    marker.touch()  # last: its presence means the folder is complete
    return root
