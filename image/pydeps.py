"""The node's Python runtime in the image: a venv at /opt/homenode with pinned aarch64 wheels.

Why wheels rather than Debian's python3-* packages: the code is developed on trio 0.35, cbor2 6,
gpiozero 2, PyNaCl 1.6 while bookworm has trio 0.22, cbor2 5.4, gpiozero 1.6; and installing
wheels from the host takes seconds, where pip inside the emulated chroot takes minutes and cannot
reach the index. The venv is laid out by hand (pyvenv.cfg + symlink to /usr/bin/python3.11) and
filled by the host's pip with --target, so nothing runs under emulation. Bytecode is compiled on
the host (same CPython minor version) with unchecked-hash pycs: reproducible, and the node's
read-only root never needs to write any.
"""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from image.progress import Progress

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements-arm64.txt"
PY = "3.11"
PLATFORM_ARGS = [
    "--only-binary=:all:", "--platform", "manylinux2014_aarch64",
    "--platform", "manylinux_2_17_aarch64", "--platform", "manylinux_2_28_aarch64",
    "--platform", "manylinux_2_34_aarch64",  # lgpio; bookworm has glibc 2.36
    "--python-version", PY, "--implementation", "cp", "--abi", "cp311",
]
VENV = "opt/homenode"
LAUNCHER = """#!/opt/homenode/bin/python3
import sys
from firmware.cli import main
sys.exit(main())
"""


def download_wheels(cache: Path, progress: Progress) -> Path:
    key = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    dest = cache / "wheels" / key
    done = dest / ".complete"
    if done.exists():
        progress.note(f"aarch64 wheels from cache: {dest}")
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    progress.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest),
                  "-r", str(REQUIREMENTS)] + PLATFORM_ARGS, label="pip download")
    done.touch()
    return dest


def build_homenode_wheel(repo: Path, out: Path, progress: Progress) -> Path:
    """`pip wheel --no-deps` of a copy of the working tree (keeps build/ out of the repo)."""
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE", "firmware", "hal"):
        p = repo / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif p.exists():
            shutil.copy2(p, src / name)
    for old in out.glob("homenode-*.whl"):
        old.unlink()
    progress.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                  str(src)], label="pip wheel")
    wheels = sorted(out.glob("homenode-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"image: expected one homenode wheel in {out}, found {wheels}")
    return wheels[0]


def install_venv(root: Path, wheels: Path, homenode_wheel: Path, progress: Progress) -> None:
    venv = root / VENV
    site = venv / "lib" / f"python{PY}" / "site-packages"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    site.mkdir(parents=True, exist_ok=True)
    (venv / "pyvenv.cfg").write_text(
        f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {PY}\n")
    for name in ("python3", "python", f"python{PY}"):
        link = venv / "bin" / name
        link.unlink(missing_ok=True)
        link.symlink_to(f"/usr/bin/python{PY}")
    progress.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-compile",
                  "--find-links", str(wheels), "--target", str(site), "--no-user",
                  "-r", str(REQUIREMENTS), str(homenode_wheel)] + PLATFORM_ARGS,
                 label="pip install")
    for junk in site.glob("bin"):
        subprocess.run(["rm", "-rf", str(junk)], check=True)
    launcher = venv / "bin" / "homenode"
    launcher.write_text(LAUNCHER)
    launcher.chmod(0o755)


def compile_bytecode(paths: list[Path], progress: Progress) -> None:
    if sys.version_info[:2] != (3, 11):
        progress.note("host Python is not 3.11: bytecode left to the device")
        return
    progress.run([sys.executable, "-m", "compileall", "-q", "-j0", "--invalidation-mode",
                  "unchecked-hash"] + [str(p) for p in paths], label="compileall")


def freeze(root: Path) -> list[str]:
    """name==version of every installed distribution in the venv (for the manifest)."""
    site = root / VENV / "lib" / f"python{PY}" / "site-packages"
    out = []
    for meta in sorted(site.glob("*.dist-info")):
        name, _, version = meta.name[: -len(".dist-info")].partition("-")
        out.append(f"{name}=={version}")
    return out
