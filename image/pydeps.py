"""The node's Python runtime in the image: a venv at /opt/homenode with pinned aarch64 wheels.

Why wheels rather than Debian's python3-* packages: the code is developed on trio 0.35, cbor2 6,
gpiozero 2, PyNaCl 1.6 while trixie has trio 0.29, cbor2 5.6, gpiozero 1.6, PyNaCl 1.5; and
installing wheels from the host takes seconds, where pip inside the emulated chroot takes minutes
and cannot reach the index. The venv is laid out by hand (pyvenv.cfg + symlink to
/usr/bin/python3.13) and filled by the host's pip with --target, so nothing runs under emulation.

lgpio (gpiozero's pin driver for /dev/gpiochip*) has no cp313 aarch64 wheel on PyPI, so its
pinned sdist is cross-compiled here (SWIG + aarch64-linux-gnu-gcc, against trixie's own
Python 3.13 headers fetched with apt) into a wheel, cached like the downloaded ones.

Bytecode: compiled by a host CPython 3.13 when one is installed (same bytecode format), else in
the arm64 chroot; unchecked-hash pycs either way, so the device never writes any.
"""

import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from image.progress import Progress

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements-arm64.txt"
PY = "3.13"
ABI = "cp313"
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64",
             "manylinux_2_34_aarch64", "manylinux_2_39_aarch64")  # trixie: glibc 2.41
PLATFORM_ARGS = ["--only-binary=:all:"] + [a for p in PLATFORMS for a in ("--platform", p)] + [
    "--python-version", PY, "--implementation", "cp", "--abi", ABI, "--abi", "abi3",
    "--abi", "none"]
CROSS_BUILT = {"lgpio"}  # pinned in REQUIREMENTS, but built here from the sdist
TRIXIE_SOURCES = ("deb [arch=arm64] http://deb.debian.org/debian trixie main\n"
                  "deb [arch=arm64] http://deb.debian.org/debian-security trixie-security main\n")
VENV = "opt/homenode"
LAUNCHER = """#!/opt/homenode/bin/python3
import sys
from firmware.cli import main
sys.exit(main())
"""


def pins() -> dict[str, str]:
    out = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[name.strip()] = version.strip()
    return out


def _pip_requirements(dest: Path) -> Path:
    """REQUIREMENTS without the cross-built packages (pip must not look for their wheels)."""
    path = dest / "requirements-binary.txt"
    path.write_text("".join(f"{n}=={v}\n" for n, v in pins().items() if n not in CROSS_BUILT))
    return path


def download_wheels(cache: Path, progress: Progress) -> Path:
    key = hashlib.sha256(REQUIREMENTS.read_bytes() + ABI.encode()).hexdigest()[:16]
    dest = cache / "wheels" / key
    done = dest / ".complete"
    if done.exists():
        progress.note(f"aarch64 wheels from cache: {dest}")
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    progress.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest),
                  "-r", str(_pip_requirements(dest))] + PLATFORM_ARGS, label="pip download")
    for name in sorted(CROSS_BUILT):
        build_cross_wheel(name, pins()[name], dest, cache, progress)
    done.touch()
    return dest


# --- cross-building a C extension for aarch64 cp313 -----------------------------------------

def _apt_sandbox(cache: Path) -> dict:
    """An apt configuration of its own (trixie, arm64) that leaves the host's apt untouched."""
    root = cache / "apt-trixie-arm64"
    for d in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "var/lib/apt/lists/partial",
              "var/cache/apt/archives/partial", "var/lib/dpkg", "debs"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").touch()
    (root / "etc/apt/sources.list").write_text(TRIXIE_SOURCES)
    conf = root / "apt.conf"
    conf.write_text(f'Dir "{root}/";\nDir::State::status "{root}/var/lib/dpkg/status";\n'
                    'APT::Architecture "arm64";\nAPT::Architectures "arm64";\n'
                    'Dir::Etc::Trusted "/etc/apt/trusted.gpg";\n'
                    'Dir::Etc::TrustedParts "/etc/apt/trusted.gpg.d/";\n')
    return dict(os.environ, APT_CONFIG=str(conf)), root


def python_headers(cache: Path, progress: Progress) -> Path:
    """trixie's arm64 Python 3.13 headers (libpython3.13-dev, unpacked, not installed)."""
    env, root = _apt_sandbox(cache)
    out = root / "libpython-dev"
    if (out / "usr/include/python3.13/Python.h").exists():
        return out
    progress.run(["apt-get", "update", "-q"], label="apt (trixie arm64 headers)", env=env)
    progress.run(["apt-get", "download", "-q", f"libpython{PY}-dev"], label="apt download",
                 env=env, cwd=str(root / "debs"))
    debs = sorted((root / "debs").glob(f"libpython{PY}-dev_*_arm64.deb"))
    if not debs:
        raise SystemExit(f"image: apt did not download libpython{PY}-dev for arm64")
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(out)], check=True)
    return out


def build_cross_wheel(name: str, version: str, dest: Path, cache: Path,
                      progress: Progress) -> Path:
    if name != "lgpio":
        raise SystemExit(f"image: no cross build recipe for {name}")
    for tool in ("swig", "aarch64-linux-gnu-gcc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"image: {tool} is missing (needed to build {name} for aarch64); "
                             "run `bash scripts/setup.sh`")
    work = cache / "work" / f"cross-{name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    progress.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
                  ":all:", "-d", str(work), f"{name}=={version}"], label="pip download sdist")
    sdist = next(work.glob(f"{name}-{version}.tar.gz"))
    subprocess.run(["tar", "-xzf", str(sdist), "-C", str(work)], check=True)
    src = work / f"{name}-{version}"
    hdr = python_headers(cache, progress)
    progress.run(["swig", "-python", "-Isrc", "-o", "lgpio_wrap.c", "lgpio.i"], label="swig",
                 cwd=str(src))
    ext = f"_lgpio.cpython-{PY.replace('.', '')}-aarch64-linux-gnu.so"
    sources = sorted(str(p.relative_to(src)) for p in (src / "src").glob("lg*.c"))
    progress.run(["aarch64-linux-gnu-gcc", "-O2", "-shared", "-fPIC", "-pthread", "-w", "-Isrc",
                  f"-I{hdr}/usr/include/python{PY}", f"-I{hdr}/usr/include",
                  f"-I{hdr}/usr/include/aarch64-linux-gnu/python{PY}", *sources,
                  "src/rgpiod.c", "lgpio_wrap.c", "-lrt", "-ldl", "-o", ext],
                 label="aarch64-linux-gnu-gcc", cwd=str(src))
    files = {"lgpio.py": (src / "lgpio.py").read_bytes(), ext: (src / ext).read_bytes()}
    out = dest / f"{name}-{version}-{ABI}-{ABI}-manylinux_2_34_aarch64.whl"
    write_wheel(out, name, version, f"{ABI}-{ABI}-manylinux_2_34_aarch64", files)
    progress.note(f"cross-built {out.name}")
    return out


def write_wheel(path: Path, name: str, version: str, tag: str, files: dict[str, bytes]) -> None:
    """A minimal wheel (PEP 427): the files, METADATA, WHEEL and a RECORD with their hashes."""
    info = f"{name}-{version}.dist-info"
    files = dict(files)
    files[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                 "Summary: cross-built for the homenode image\n").encode()
    files[f"{info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: homenode-image\n"
                              f"Root-Is-Purelib: false\nTag: {tag}\n").encode()
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for fname, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([fname, f"sha256={digest}", len(data)])
    writer.writerow([f"{info}/RECORD", "", ""])
    files[f"{info}/RECORD"] = record.getvalue().encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for fname, data in files.items():
            zi = zipfile.ZipInfo(fname, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            z.writestr(zi, data)


# --- the venv ---------------------------------------------------------------------------------

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


def site_packages(root: Path) -> Path:
    return root / VENV / "lib" / f"python{PY}" / "site-packages"


def install_venv(root: Path, wheels: Path, homenode_wheel: Path, progress: Progress) -> None:
    venv = root / VENV
    site = site_packages(root)
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


def host_python() -> str | None:
    """A CPython of the image's minor version on the build host, if any (compiles bytecode)."""
    want = tuple(int(x) for x in PY.split("."))
    if sys.version_info[:2] == want:
        return sys.executable
    pyenv = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
    candidates = [str(p / "bin" / f"python{PY}") for p in sorted(pyenv.glob(f"{PY}.*"),
                                                                  reverse=True)]
    candidates += [c for c in (shutil.which(f"python{PY}"),) if c]
    for exe in candidates:
        try:
            out = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == str(want):
            return exe
    return None


def compile_bytecode(root: Path, paths: list[str], progress: Progress, chroot) -> None:
    """Unchecked-hash pycs for `paths` (absolute inside the image)."""
    args = ["-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash"]
    py = host_python()
    if py:
        # -s/-p: record the paths as they are on the device, not in the build tree
        cmd = [py] + args
        for p in paths:
            progress.run(cmd + ["-s", str(root), "-p", "/", str(root / p.lstrip("/"))],
                         label="compileall")
        return
    progress.note(f"no host Python {PY}: compiling bytecode in the arm64 chroot (slower)")
    chroot(root, f"/usr/bin/python{PY} " + " ".join(args + list(paths)))


def freeze(root: Path) -> list[str]:
    """name==version of every installed distribution in the venv (for the manifest)."""
    out = []
    for meta in sorted(site_packages(root).glob("*.dist-info")):
        name, _, version = meta.name[: -len(".dist-info")].partition("-")
        out.append(f"{name}=={version}")
    return out
