"""Part 7: a read-only and a full input folder (tmpfs mounts made by the test)."""

from __future__ import annotations

import pytest
from comfy_server import ComfyServer

from . import disk_trouble


def test_publish_on_a_read_only_and_a_full_disk():
    disk_trouble.run_unit().assert_passed()


@pytest.mark.comfy
def test_comfyui_with_a_read_only_and_a_full_input_folder(tmp_path):
    disk_trouble.run_comfy(
        lambda mount: ComfyServer(base_dir=tmp_path / "base", input_directory=mount)).assert_passed()
