"""The frontend matrix of the browser tier: which ComfyUI frontends, with Nodes 2.0 off and on.

- "pinned": the comfyui-frontend-package that ComfyUI's requirements install (1.27.10 for v0.3.64).
- "newest": the newest comfyui-frontend-package on the package registry, unzipped once into a cache
  folder and served with --front-end-root.
Each is run with Vue-rendered nodes ("Nodes 2.0", the setting Comfy.VueNodes.Enabled) off and on.

DATASETE_FRONTENDS picks combinations ("all", the default, or ids such as "pinned-classic,newest-vue");
DATASETE_FRONTEND_ROOT points at an unzipped newest frontend's static folder instead of the download.
Where the newest frontend cannot be had (no network), its combinations are skipped with the reason,
unless DATASETE_FRONTENDS_STRICT=1 (CI), where that is a failure.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

PINNED = "pinned"
NEWEST = "newest"
FRONTEND_PACKAGE = "comfyui-frontend-package"
CACHE_DIR = Path(os.environ.get("DATASETE_CACHE_DIR", Path.home() / ".cache" / "datasete-gates"))


@dataclass(frozen=True)
class Frontend:
    release: str      # PINNED or NEWEST
    vue_nodes: bool   # Nodes 2.0 (Comfy.VueNodes.Enabled)

    @property
    def id(self) -> str:
        return f"{self.release}-{'vue' if self.vue_nodes else 'classic'}"

    @property
    def nodes_show_dom_widgets(self) -> bool:
        """False where nodes cannot hold the pack's panel: 1.27's Nodes 2.0 (experimental there)
        skips every widget type it does not know, so waiting gates show in the pack's dock instead."""
        return not (self.release == PINNED and self.vue_nodes)


ALL = tuple(Frontend(release, vue) for release in (PINNED, NEWEST) for vue in (False, True))


def selected() -> list[Frontend]:
    wanted = os.environ.get("DATASETE_FRONTENDS", "all").strip()
    if wanted in ("", "all"):
        return list(ALL)
    ids = {part.strip() for part in wanted.split(",") if part.strip()}
    unknown = ids - {f.id for f in ALL}
    if unknown:
        raise ValueError(f"DATASETE_FRONTENDS names unknown combinations {sorted(unknown)}; "
                         f"known: {[f.id for f in ALL]}")
    return [f for f in ALL if f.id in ids]


def strict() -> bool:
    return os.environ.get("DATASETE_FRONTENDS_STRICT", "") == "1"


_newest: dict = {}


def newest_root() -> tuple[Path | None, str]:
    """(the newest frontend's static folder, its version) or (None, why not). Downloaded once, then cached."""
    if "answer" in _newest:
        return _newest["answer"]
    explicit = os.environ.get("DATASETE_FRONTEND_ROOT")
    if explicit:
        root = Path(explicit)
        answer = (root, _version_of(root)) if (root / "index.html").exists() else (
            None, f"DATASETE_FRONTEND_ROOT={explicit} has no index.html")
    else:
        answer = _download_newest()
    _newest["answer"] = answer
    return answer


def _version_of(static: Path) -> str:
    # <unzipped wheel>/comfyui_frontend_package/static: the dist-info beside the package says the version.
    for info in static.parent.parent.glob("comfyui_frontend_package-*.dist-info"):
        return info.name.split("-")[1].removesuffix(".dist-info")
    return "unknown"


def _download_newest() -> tuple[Path | None, str]:
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
             "--disable-pip-version-check", "-d", folder, FRONTEND_PACKAGE],
            capture_output=True, text=True, timeout=600)
        wheels = glob.glob(os.path.join(folder, "comfyui_frontend_package-*.whl"))
        if done.returncode != 0 or not wheels:
            return None, f"newest {FRONTEND_PACKAGE} could not be downloaded: {done.stderr.strip()[-300:]}"
        wheel = Path(wheels[0])
        version = wheel.name.split("-")[1]
        target = CACHE_DIR / f"frontend-{version}"
        static = target / "comfyui_frontend_package" / "static"
        if not (static / "index.html").exists():
            staging = Path(tempfile.mkdtemp(prefix=f"frontend-{version}-", dir=_ensure(CACHE_DIR)))
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(staging)
            try:
                staging.rename(target)  # another run may have unpacked it meanwhile: then use that one
            except OSError:
                subprocess.run(["rm", "-rf", str(staging)], check=False)
        return static, version


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def pinned_version(comfy_dir: Path) -> str:
    for line in (comfy_dir / "requirements.txt").read_text().splitlines():
        if line.startswith(FRONTEND_PACKAGE + "=="):
            return line.split("==", 1)[1].strip()
    return "unknown"


def describe(frontend: Frontend, version: str) -> dict:
    return {"id": frontend.id, "version": version, "vue_nodes": frontend.vue_nodes}


if __name__ == "__main__":  # python tests/frontends.py: fetch the newest frontend, print where it is
    print(json.dumps({"newest": [str(p) if isinstance(p, Path) else p for p in newest_root()]}))
