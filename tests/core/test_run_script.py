"""The one-command launcher: run.sh detects the GPU from the programs a driver installs and picks the
matching PyTorch build, `--dry-run` shows the exact commands, a stamp skips work already done, and
run.bat mirrors it for Windows.

Detection runs against fake `nvidia-smi`, `rocminfo`, `lspci`, `sycl-ls`, `clinfo` and `uname`
programs on a PATH that holds only them and the basic tools the script needs, so the machine's own
hardware never leaks in; nothing is installed. The real first run, which installs packages, is in
tests/launcher/test_first_run.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

RUN_SH = ROOT / "run.sh"
RUN_BAT = ROOT / "run.bat"
BASH = shutil.which("bash")
# What run.sh calls besides the GPU tools; linked one by one into the test's PATH.
TOOLS = ["bash", "env", "sed", "grep", "awk", "head", "dirname", "rm", "cat"]

pytestmark = pytest.mark.skipif(BASH is None, reason="needs bash")


def _script(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def nvidia_smi(cuda: str = "12.8", name: str = "NVIDIA GeForce RTX 4070") -> str:
    return f"""case "$*" in
  *--query-gpu=name*) echo "{name}" ;;
  *) cat <<'EOF'
Thu Nov 26 10:00:00 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|   0  {name}        Off |   00000000:01:00.0  On |                  N/A |
+-----------------------------------------+------------------------+----------------------+
EOF
  ;;
esac
"""


def rocminfo(gfx: str = "gfx1100", name: str = "Radeon RX 7900 XTX") -> str:
    return f"""cat <<'EOF'
ROCk module is loaded
=====================
HSA Agents
==========
*******
Agent 1
*******
  Name:                    AMD Ryzen 9 7950X 16-Core Processor
  Uuid:                    CPU-XX
  Marketing Name:          AMD Ryzen 9 7950X 16-Core Processor
  Vendor Name:             CPU
*******
Agent 2
*******
  Name:                    {gfx}
  Uuid:                    GPU-7f1d2c3b4a596877
  Marketing Name:          {name}
  Vendor Name:             AMD
  Device Type:             GPU
EOF
"""


def lspci(*adapters: str) -> str:
    lines = ["00:00.0 Host bridge: Advanced Micro Devices, Inc. [AMD] Root Complex"]
    lines += [f"0{i + 1}:00.0 {adapter}" for i, adapter in enumerate(adapters)]
    return "cat <<'EOF'\n" + "\n".join(lines) + "\nEOF\n"


def uname(system: str, machine: str) -> str:
    return f'case "$1" in -m) echo {machine} ;; *) echo {system} ;; esac\n'


class Launcher:
    """run.sh and requirements.txt copied into a folder of their own, run with a PATH of fakes."""

    def __init__(self, tmp_path: Path, python: bool = True):
        self.app = tmp_path / "app"
        self.app.mkdir()
        shutil.copy2(RUN_SH, self.app / "run.sh")
        shutil.copy2(ROOT / "requirements.txt", self.app / "requirements.txt")
        self.fakes = tmp_path / "fakes"
        self.fakes.mkdir()
        self.system = tmp_path / "system"
        self.system.mkdir()
        for tool in TOOLS:
            (self.system / tool).symlink_to(shutil.which(tool))
        if python:
            (self.system / "python3").symlink_to(sys.executable)
        self.fake("uname", uname("Linux", "x86_64"))
        self.env = {"PATH": f"{self.fakes}:{self.system}", "HOME": str(tmp_path),
                    "ROCM_PATH": str(tmp_path / "no-rocm")}

    def fake(self, name: str, body: str) -> None:
        _script(self.fakes, name, body)

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        result = subprocess.run([BASH, str(self.app / "run.sh"), *args], cwd=self.app, env={**self.env, **env},
                                capture_output=True, text=True, timeout=60)
        result.out = result.stdout + result.stderr
        return result

    def dry_run(self, *args: str, **env: str) -> str:
        result = self.run("--dry-run", *args, **env)
        assert result.returncode == 0, result.out
        assert not (self.app / ".venv").exists()  # nothing was installed
        return result.out

    def fake_venv(self, stamp: dict[str, str] | None = None) -> Path:
        """A .venv whose python is this one, with the stamp a finished install leaves."""
        bin_dir = self.app / ".venv" / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "python").symlink_to(sys.executable)
        if stamp is not None:
            text = "".join(f"{key}={value}\n" for key, value in stamp.items())
            (self.app / ".venv" / "sote-install.stamp").write_text(text)
        return bin_dir

    def requirements_hash(self) -> str:
        import hashlib

        return hashlib.sha256((self.app / "requirements.txt").read_bytes()).hexdigest()


INDEX = "https://download.pytorch.org/whl"
VENV_PY = ".venv/bin/python"


@pytest.fixture
def launcher(tmp_path):
    return Launcher(tmp_path)


def step(out: str, number: int) -> str:
    """The line of step NUMBER, e.g. `[2/5] Accelerator  NVIDIA ...`."""
    lines = [line for line in out.splitlines() if line.startswith(f"[{number}/5]")]
    assert len(lines) == 1, out
    return lines[0]


# ---- detection, one vendor at a time -------------------------------------------------------------

def test_no_gpu_installs_the_cpu_build_and_mentions_the_demo(launcher):
    out = launcher.dry_run("--demo")
    assert "no supported GPU found -> PyTorch CPU build" in step(out, 2)
    assert "slow" in out and "./run.sh --demo" in out
    assert f"would run: {VENV_PY} -m pip install torch --index-url {INDEX}/cpu" in out
    assert f"would run: {VENV_PY} -m pip install -r requirements.txt" in out
    assert f"would run: {launcher.system / 'python3'} -m venv .venv" in out
    assert f"Would start: {VENV_PY} app.py --demo" in out
    assert "Dry run: nothing was installed or started." in out


@pytest.mark.parametrize(("cuda", "index"), [
    ("13.0", "cu130"), ("12.9", "cu128"), ("12.8", "cu128"), ("12.6", "cu126"), ("12.5", "cu124"),
    ("12.4", "cu124"), ("12.2", "cu118"), ("11.8", "cu118"),
])
def test_nvidia_gets_the_newest_cuda_build_its_driver_runs(launcher, cuda, index):
    launcher.fake("nvidia-smi", nvidia_smi(cuda, "NVIDIA GeForce RTX 4070"))
    out = launcher.dry_run()
    assert step(out, 2) == (f"[2/5] Accelerator  NVIDIA NVIDIA GeForce RTX 4070, driver supports CUDA {cuda} "
                            f"-> PyTorch {index} build")
    assert f"would run: {VENV_PY} -m pip install torch --index-url {INDEX}/{index}\n" in out


def test_an_nvidia_driver_too_old_for_any_build_says_update_it(launcher):
    launcher.fake("nvidia-smi", nvidia_smi("11.4"))
    out = launcher.dry_run()
    assert "only CUDA 11.4" in out and "update the NVIDIA driver" in out
    assert f"--index-url {INDEX}/cpu" in out


def test_a_broken_nvidia_driver_is_reported_and_the_cpu_build_chosen(launcher):
    launcher.fake("nvidia-smi", "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\n"
                                "exit 9\n")
    out = launcher.dry_run()
    assert "nvidia-smi is installed but reports no driver: NVIDIA-SMI has failed" in out
    assert f"--index-url {INDEX}/cpu" in out


def test_nvidia_without_its_driver_is_named_from_lspci(launcher):
    launcher.fake("lspci", lspci("VGA compatible controller: NVIDIA Corporation AD104 [GeForce RTX 4070] (rev a1)"))
    out = launcher.dry_run()
    assert "lspci shows NVIDIA Corporation AD104 [GeForce RTX 4070] (rev a1): install the NVIDIA driver" in out
    assert f"--index-url {INDEX}/cpu" in out


def test_amd_with_rocm_gets_the_rocm_build_and_its_name(launcher):
    launcher.fake("rocminfo", rocminfo("gfx1100", "Radeon RX 7900 XTX"))
    out = launcher.dry_run()
    assert step(out, 2) == "[2/5] Accelerator  AMD Radeon RX 7900 XTX (gfx1100), ROCm found -> PyTorch rocm6.4 build"
    assert f"would run: {VENV_PY} -m pip install torch --index-url {INDEX}/rocm6.4\n" in out
    assert "HSA_OVERRIDE_GFX_VERSION" not in out


@pytest.mark.parametrize(("gfx", "name", "override"), [
    ("gfx1031", "AMD Radeon RX 6700 XT", "10.3.0"),
    ("gfx1032", "AMD Radeon RX 6600", "10.3.0"),
    ("gfx1103", "AMD Radeon 780M", "11.0.0"),
])
def test_a_consumer_amd_gpu_outside_rocms_targets_runs_with_hsa_override(launcher, gfx, name, override):
    launcher.fake("rocminfo", rocminfo(gfx, name))
    out = launcher.dry_run("--demo")
    assert f"AMD {name} ({gfx})" in step(out, 2)
    assert f"{gfx} is not a target of PyTorch's ROCm builds" in out
    assert f"Would start: HSA_OVERRIDE_GFX_VERSION={override} {VENV_PY} app.py --demo" in out


def test_a_users_own_hsa_override_is_kept(launcher):
    launcher.fake("rocminfo", rocminfo("gfx1031", "AMD Radeon RX 6700 XT"))
    out = launcher.dry_run(HSA_OVERRIDE_GFX_VERSION="10.3.1")
    assert "yours is set to 10.3.1" in out
    assert f"Would start: {VENV_PY} app.py\n" in out


def test_rocm_found_by_its_folder_alone_names_the_gpu_from_lspci(launcher, tmp_path):
    rocm = tmp_path / "rocm"
    rocm.mkdir()
    launcher.fake("lspci", lspci("VGA compatible controller: Advanced Micro Devices, Inc. [AMD/ATI] Navi 31 "
                                 "[Radeon RX 7900 XT/7900 XTX] (rev c8)"))
    out = launcher.dry_run(ROCM_PATH=str(rocm))
    assert "AMD Advanced Micro Devices, Inc. [AMD/ATI] Navi 31 [Radeon RX 7900 XT/7900 XTX]" in step(out, 2)
    assert "'render' and 'video' groups" in out
    assert f"--index-url {INDEX}/rocm6.4" in out


def test_rocminfo_in_the_rocm_folder_is_used_when_not_on_path(launcher, tmp_path):
    (tmp_path / "rocm" / "bin").mkdir(parents=True)
    _script(tmp_path / "rocm" / "bin", "rocminfo", rocminfo("gfx1101", "Radeon RX 7800 XT"))
    out = launcher.dry_run(ROCM_PATH=str(tmp_path / "rocm"))
    assert "AMD Radeon RX 7800 XT (gfx1101)" in step(out, 2)


def test_an_amd_gpu_without_rocm_says_to_install_rocm(launcher):
    launcher.fake("lspci", lspci("VGA compatible controller: Advanced Micro Devices, Inc. [AMD/ATI] Navi 22 "
                                 "[Radeon RX 6700/6700 XT/6750 XT / 6800M/6850M XT] (rev c1)"))
    out = launcher.dry_run()
    assert "install ROCm (https://rocm.docs.amd.com)" in out
    assert f"--index-url {INDEX}/cpu" in out


@pytest.mark.parametrize(("tool", "body", "name"), [
    ("sycl-ls", "echo '[opencl:cpu][opencl:0] Intel(R) OpenCL, 13th Gen Intel(R) Core(TM) i7-13700K 3.0 [2024.18.6.0.02]'\n"
                "echo '[level_zero:gpu][level_zero:0] Intel(R) Level-Zero, Intel(R) Arc(TM) A770 Graphics 12.55.8 "
                "[1.3.29735]'\n", "Intel(R) Arc(TM) A770 Graphics"),
    ("clinfo", "echo 'Number of platforms  1'\n"
               "echo '  Device Name                                     Intel(R) Arc(TM) B580 Graphics'\n",
     "Intel(R) Arc(TM) B580 Graphics"),
    ("lspci", lspci("VGA compatible controller: Intel Corporation DG2 [Arc A750] (rev 08)"),
     "Intel Corporation DG2 [Arc A750] (rev 08)"),
])
def test_intel_arc_gets_the_xpu_build(launcher, tool, body, name):
    launcher.fake(tool, body)
    out = launcher.dry_run()
    assert step(out, 2) == f"[2/5] Accelerator  Intel {name} -> PyTorch xpu build"
    assert f"would run: {VENV_PY} -m pip install torch --index-url {INDEX}/xpu\n" in out


def test_an_intel_integrated_gpu_without_arc_is_not_taken_for_one(launcher):
    launcher.fake("lspci", lspci("VGA compatible controller: Intel Corporation Raptor Lake-S GT1 [UHD Graphics 770] (rev 04)"))
    out = launcher.dry_run()
    assert f"--index-url {INDEX}/cpu" in out


def test_apple_silicon_gets_plain_pypi_torch(launcher):
    launcher.fake("uname", uname("Darwin", "arm64"))
    out = launcher.dry_run()
    assert step(out, 2) == "[2/5] Accelerator  Apple silicon (Metal) -> PyTorch from PyPI, with MPS"
    assert f"would run: {VENV_PY} -m pip install torch\n" in out


def test_an_intel_mac_is_refused_with_the_reason(launcher):
    launcher.fake("uname", uname("Darwin", "x86_64"))
    result = launcher.run("--dry-run")
    assert result.returncode == 1
    assert "error: step 2/5 (Accelerator) failed: this Mac reports an Intel CPU (x86_64)" in result.out
    assert "native arm64 terminal" in result.out


def test_nvidia_is_chosen_before_amd_and_intel(launcher):
    launcher.fake("nvidia-smi", nvidia_smi("12.6"))
    launcher.fake("rocminfo", rocminfo())
    launcher.fake("lspci", lspci("VGA compatible controller: Intel Corporation DG2 [Arc A770] (rev 08)"))
    out = launcher.dry_run()
    assert "-> PyTorch cu126 build" in step(out, 2)


def test_torch_command_wins_over_detection_and_is_run_as_given(launcher):
    launcher.fake("nvidia-smi", nvidia_smi("12.8"))
    out = launcher.dry_run(TORCH_COMMAND="pip install torch==2.13.0 torchvision")
    assert step(out, 2) == "[2/5] Accelerator  TORCH_COMMAND is set: python -m pip install torch==2.13.0 torchvision"
    assert f"would run: {VENV_PY} -m pip install torch==2.13.0 torchvision\n" in out
    assert "NVIDIA" not in out


# ---- arguments, Python, stamp ---------------------------------------------------------------------

def test_flags_not_its_own_go_to_the_app(launcher):
    out = launcher.dry_run("--mode", "offload-fp8", "--reinstall", "--port", "7861")
    assert f"Would start: {VENV_PY} app.py --mode offload-fp8 --port 7861\n" in out


def test_help_lists_the_launchers_options_and_installs_nothing(launcher):
    result = launcher.run("--help")
    assert result.returncode == 0
    for option in ("--dry-run", "--reinstall", "TORCH_COMMAND", "PYTHON"):
        assert option in result.out
    assert not (launcher.app / ".venv").exists()


def test_no_python_names_what_to_install(tmp_path):
    launcher = Launcher(tmp_path, python=False)
    result = launcher.run("--dry-run")
    assert result.returncode == 1
    assert "error: step 1/5 (Python) failed: no Python 3.10 or newer found on PATH" in result.out
    assert "sudo apt install python3 python3-venv" in result.out


def test_a_python_given_by_the_user_that_is_not_python_is_refused(launcher, tmp_path):
    result = launcher.run("--dry-run", PYTHON=str(tmp_path / "nowhere" / "python"))
    assert result.returncode == 1
    assert "error: step 1/5 (Python) failed: PYTHON=" in result.out


def test_a_finished_install_installs_nothing(launcher):
    launcher.fake_venv({"torch_command": f"pip install torch --index-url {INDEX}/cpu", "torch_kind": "cpu",
                        "requirements": launcher.requirements_hash()})
    result = launcher.run("--dry-run", "--demo")
    assert result.returncode == 0, result.out
    assert "[3/5] Environment  .venv exists" in result.out
    assert step(result.out, 4).endswith("up to date (python -m pip install torch --index-url "
                                        "https://download.pytorch.org/whl/cpu)")
    assert step(result.out, 5) == "[5/5] Packages     up to date (requirements.txt unchanged)"
    assert "would run" not in result.out


def test_changed_requirements_are_installed_again(launcher):
    launcher.fake_venv({"torch_command": f"pip install torch --index-url {INDEX}/cpu", "torch_kind": "cpu",
                        "requirements": "an-older-hash"})
    out = launcher.run("--dry-run").out
    assert "PyTorch      up to date" in out
    assert out.count("would run:") == 1
    assert f"would run: {VENV_PY} -m pip install -r requirements.txt" in out


def test_a_new_gpu_replaces_the_cpu_build(launcher):
    launcher.fake_venv({"torch_command": f"pip install torch --index-url {INDEX}/cpu", "torch_kind": "cpu",
                        "requirements": launcher.requirements_hash()})
    launcher.fake("nvidia-smi", nvidia_smi("12.8"))
    out = launcher.run("--dry-run").out
    assert f"the choice changed from python -m pip install torch --index-url {INDEX}/cpu" in step(out, 4)
    runs = [line.strip() for line in out.splitlines() if "would run:" in line]
    assert runs == [f"would run: {VENV_PY} -m pip uninstall -y torch torchvision torchaudio",
                    f"would run: {VENV_PY} -m pip install torch --index-url {INDEX}/cu128"]


def test_a_gpu_build_is_kept_when_no_gpu_answers(launcher):
    launcher.fake_venv({"torch_command": f"pip install torch --index-url {INDEX}/cu128", "torch_kind": "cuda",
                        "requirements": launcher.requirements_hash()})
    out = launcher.run("--dry-run").out
    assert "no GPU found now: keeping the installed build" in step(out, 4)
    assert "would run" not in out


def test_a_torch_command_build_is_kept_without_the_variable(launcher):
    launcher.fake_venv({"torch_command": "pip install torch==2.13.0", "torch_kind": "custom",
                        "requirements": launcher.requirements_hash()})
    launcher.fake("nvidia-smi", nvidia_smi("12.8"))
    out = launcher.run("--dry-run").out
    assert "keeping the build installed with TORCH_COMMAND (python -m pip install torch==2.13.0)" in step(out, 4)
    assert "would run" not in out


def test_reinstall_starts_over(launcher):
    launcher.fake_venv({"torch_command": f"pip install torch --index-url {INDEX}/cpu", "torch_kind": "cpu",
                        "requirements": launcher.requirements_hash()})
    out = launcher.run("--dry-run", "--reinstall").out
    runs = [line.strip() for line in out.splitlines() if "would run:" in line]
    assert runs == ["would run: rm -rf .venv", f"would run: {launcher.system / 'python3'} -m venv .venv",
                    f"would run: {VENV_PY} -m pip install torch --index-url {INDEX}/cpu",
                    f"would run: {VENV_PY} -m pip install -r requirements.txt"]
    assert (launcher.app / ".venv" / "sote-install.stamp").is_file()  # a dry run removes nothing


def test_a_failed_install_names_the_step_and_what_to_do(launcher):
    # A venv whose pip fails, as with no network: the launcher stops at step 4 and leaves no stamp.
    bin_dir = launcher.app / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    _script(bin_dir, "python", f'if [ "$1" = -m ]; then echo "ERROR: network is unreachable"; exit 1; fi\n'
                               f'exec {sys.executable} "$@"\n')
    result = launcher.run("--demo")
    assert result.returncode == 1
    assert "running: .venv/bin/python -m pip install torch --index-url" in result.out
    assert "error: step 4/5 (PyTorch) failed: python -m pip install torch --index-url" in result.out
    assert "Check your network and disk space" in result.out
    assert not (launcher.app / ".venv" / "sote-install.stamp").exists()
    assert "Starting" not in result.out


def test_a_venv_that_fails_halfway_is_removed(launcher, tmp_path):
    python = tmp_path / "bin" / "python3.12"
    python.parent.mkdir()
    _script(python.parent, "python3.12", 'if [ "$2" = venv ]; then mkdir -p "$3/bin"; echo "Error: ensurepip failed"; exit 1; fi\n'
                                         f'exec {sys.executable} "$@"\n')
    result = launcher.run("--demo", PYTHON=str(python))
    assert result.returncode == 1
    assert f"error: step 3/5 (Environment) failed: {python} could not create .venv" in result.out
    assert not (launcher.app / ".venv").exists()  # so the next run makes it again


# ---- run.bat mirrors run.sh ---------------------------------------------------------------------

def _sh() -> str:
    return RUN_SH.read_text()


def _bat() -> str:
    return RUN_BAT.read_bytes().decode()


def test_every_option_run_sh_documents_is_in_run_bat():
    header = _sh().split("\n\n")[0]
    documented = set(re.findall(r"^#\s+(--[a-z-]+|[A-Z_]{4,})\s", header, re.M))
    assert {"--dry-run", "--reinstall", "--help", "TORCH_COMMAND", "PYTHON"} <= documented
    bat = _bat()
    for option in documented:
        assert option in bat, option
    assert '"--dry-run"' in bat and '"--reinstall"' in bat and "TORCH_COMMAND" in bat


def test_run_bat_uses_the_same_indexes_table_and_steps():
    sh, bat = _sh(), _bat()
    table = re.search(r'^CUDA_INDEXES="([^"]+)"', sh, re.M).group(1)
    assert f'set "CUDA_INDEXES={table}"' in bat
    index = re.search(r"^TORCH_INDEX=(\S+)", sh, re.M).group(1)
    assert f'set "TORCH_INDEX={index}"' in bat
    for suffix in ("/xpu", "/cpu"):
        assert f"$TORCH_INDEX{suffix}" in sh and f"%TORCH_INDEX%{suffix}" in bat
    rocm = re.search(r"^ROCM_INDEX=(\S+)", sh, re.M).group(1)
    assert f"{index}/{rocm}" in bat  # named where it says Windows has no ROCm build
    assert "no ROCm build for Windows" in bat
    steps_sh = set(re.findall(r"\bstep (\d) (\w+)", sh))
    steps_bat = set(re.findall(r"\[(\d)/5\] (\w+)", bat))
    assert steps_sh == steps_bat == {("1", "Python"), ("2", "Accelerator"), ("3", "Environment"),
                                     ("4", "PyTorch"), ("5", "Packages")}
    for key in ("torch_command=", "torch_kind=", "requirements=", "sote-install.stamp",
                "pip uninstall -y torch torchvision torchaudio", "pip install -r requirements.txt",
                "sys.version_info < (3, 10)", "hashlib.sha256(pathlib.Path(sys.argv[1]).read_bytes())"):
        assert key in sh and key in bat, key


def test_run_bat_jumps_only_to_labels_it_has_and_uses_windows_line_ends():
    raw = RUN_BAT.read_bytes()
    assert raw.count(b"\n") == raw.count(b"\r\n")  # cmd.exe misreads labels in LF-only files
    bat = raw.decode()
    labels = {m.lower() for m in re.findall(r"^:(\w+)\s*$", bat, re.M)}
    targets = {m.lower() for m in re.findall(r"\b(?:goto|call) :?(\w+)", bat, re.I)}
    assert targets and targets <= labels, targets - labels
    # Every block closes: count brackets outside quotes and ^-escapes, line by line.
    depth = 0
    for line in bat.splitlines():
        if line.lstrip().lower().startswith(("rem", "::")):
            continue
        line = re.sub(r'"[^"]*"', "", line.replace("^(", "").replace("^)", "").replace("echo(", "echo "))
        depth += line.count("(") - line.count(")")
        assert depth >= 0, line
    assert depth == 0
