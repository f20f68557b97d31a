"""A missing optional module is one clear error and exit 78 before the daemon starts, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import ButtonConfig, CameraConfig, Config, RecordingConfig
from edge.errors import ConfigError
from edge.service.preflight import check_modules, requirements


def _config(**kw: object) -> Config:
    return Config(**kw)  # type: ignore[arg-type]


def test_default_config_needs_only_installed_modules() -> None:
    config = _config()
    # The demo default records, so it needs PyAV: the plain install must carry it (setup.cfg install_requires).
    assert [r.module for r in requirements(config)] == ["av"]
    check_modules(config)  # nothing missing in the plain install


def test_every_missing_module_is_named_with_what_asked_for_it_and_how_to_install() -> None:
    config = _config(
        cameras={"front_door": CameraConfig(source="picamera2")},
        recording=RecordingConfig(enabled=True),
        button=ButtonConfig(gpio_pin=17),
    )
    with pytest.raises(ConfigError) as info:
        check_modules(config, importable=lambda module: False)
    lines = info.value.messages
    assert len(lines) == 3
    assert lines[0].startswith("cameras.front_door.source: picamera2: needs the Python module 'picamera2'")
    assert "sudo apt install python3-picamera2" in lines[0]
    assert lines[1].startswith("recording.enabled: true: needs the Python module 'av'")
    assert "button.gpio_pin: 17" in lines[2] and "python3-gpiozero" in lines[2]
    assert info.value.exit_code == 78


def test_recording_off_does_not_need_pyav() -> None:
    assert "av" not in [r.module for r in requirements(_config(recording=RecordingConfig(enabled=False)))]


def _no_picamera2() -> None:
    try:
        import picamera2  # noqa: F401
    except ImportError:
        return
    pytest.skip("picamera2 is installed here: the missing-module path cannot be shown")


def _cli(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The command line on a config whose camera is a picamera2, in a fresh state dir."""
    config = tmp_path / "config.yaml"
    config.write_text("cameras:\n  front_door: {source: picamera2}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOORBELL_EDGE_")}
    env.update(DOORBELL_EDGE_STATE_DIR=str(tmp_path / "state"), HOME=str(tmp_path))
    return subprocess.run([sys.executable, "-m", "edge", *argv, "--config", str(config)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_run_with_a_picamera2_config_where_picamera2_is_missing_exits_78_without_traceback(tmp_path: Path) -> None:
    pytest.importorskip("av")
    _no_picamera2()
    proc = _cli(tmp_path, "run", "--for", "5")
    assert proc.returncode == 78, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "needs the Python module 'picamera2'" in proc.stderr
    assert "python3-picamera2" in proc.stderr
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


def test_check_config_warns_about_a_missing_module_but_passes(tmp_path: Path) -> None:
    """The Pi config checked on a machine without picamera2 (install.sh does that on plain Debian): a warning
    naming the module and that `run` will refuse, exit 0."""
    _no_picamera2()
    proc = _cli(tmp_path, "check-config", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "check-config: warning: cameras.front_door.source: picamera2: needs the Python module 'picamera2'" \
        in proc.stderr
    assert "will refuse to start (exit 78)" in proc.stderr
