@echo off
rem Sote Studio: install everything on the first run, then start the app.
rem
rem   run.bat [--dry-run] [--reinstall] [app.py flags...]
rem
rem   --dry-run     print what was detected and the exact commands it would run; install nothing
rem   --reinstall   delete .venv and install everything again
rem   --help        this text, then app.py's own flags once installed
rem   Every other flag goes to app.py: run.bat --demo, run.bat --mode offload-fp8 --port 7861
rem
rem Environment:
rem   TORCH_COMMAND  how to install PyTorch, run as "python -m %TORCH_COMMAND%" inside .venv
rem   PYTHON         the Python 3.10+ that creates .venv (default: python, then the py launcher)
rem
rem The same steps as run.sh, one for one: change both together. PyTorch's ROCm builds
rem (https://download.pytorch.org/whl/rocm6.4) are for Linux only, so AMD cards get the CPU build here.
setlocal EnableExtensions DisableDelayedExpansion
cd /d "%~dp0"

set "VENV=.venv"
set "VENV_PY=.venv\Scripts\python.exe"
set "STAMP=.venv\sote-install.stamp"
set "TORCH_INDEX=https://download.pytorch.org/whl"
:: The driver's highest CUDA version -> the newest PyTorch CUDA index not above it (as in run.sh).
set "CUDA_INDEXES=13.0:cu130 12.8:cu128 12.6:cu126 12.4:cu124 11.8:cu118"

:: What a Python one-liner prints is read back through this file (for /f mangles quoted paths).
set "OUT=%TEMP%\sote-studio-launcher.txt"
set "PYVER="
set "DRY_RUN=0"
set "REINSTALL=0"
set "APP_ARGS="
:args
if [%1]==[] goto args_done
if /i "%~1"=="--dry-run" (set "DRY_RUN=1") else if /i "%~1"=="--reinstall" (set "REINSTALL=1") else if /i "%~1"=="--help" (goto help) else if /i "%~1"=="-h" (goto help) else set APP_ARGS=%APP_ARGS% %1
shift
goto args
:help
for /f "tokens=1* delims= " %%A in ('findstr /b /i "rem" "%~f0"') do echo(%%B
if exist "%VENV_PY%" (
  "%VENV_PY%" app.py --help
) else (
  echo app.py's flags are listed once it is installed: run run.bat
)
exit /b 0
:args_done
setlocal EnableDelayedExpansion

:: ---- 1. Python ----
if "%REINSTALL%"=="0" if exist "%VENV%" (
  "%VENV_PY%" -c "import sys; sys.exit(sys.version_info < (3, 10))" >nul 2>&1 || (
    echo       .venv is broken or too old: it will be made again
    set "REINSTALL=1"
  )
)
if "%REINSTALL%"=="0" if exist "%VENV%" (
  set "PY="%VENV_PY%""
  "%VENV_PY%" -c "import platform; print(platform.python_version())" > "%OUT%" 2>nul
  set /p PYVER=<"%OUT%"
  echo [1/5] Python       %VENV_PY% ^(!PYVER!, in .venv^)
  goto detect
)
set "PY="
if defined PYTHON (
  "%PYTHON%" -c "import sys; sys.exit(sys.version_info < (3, 10))" >nul 2>&1 || (
    call :fail 1 Python "PYTHON=%PYTHON% is not a Python 3.10 or newer" "Set PYTHON to a python.exe of 3.10 or newer, or unset it."
    exit /b 1
  )
  set "PY="%PYTHON%""
)
for %%C in ("python" "py -3" "py -3.13" "py -3.12" "py -3.11" "py -3.10") do (
  if not defined PY (
    %%~C -c "import sys; sys.exit(sys.version_info < (3, 10))" >nul 2>&1 && set "PY=%%~C"
  )
)
if not defined PY (
  call :fail 1 Python "no Python 3.10 or newer found" "Install one from https://www.python.org (tick 'Add python.exe to PATH'), or set PYTHON=C:\path\to\python.exe."
  exit /b 1
)
!PY! -c "import platform; print(platform.python_version())" > "%OUT%" 2>nul
set /p PYVER=<"%OUT%"
echo [1/5] Python       !PY! ^(!PYVER!^)

:: ---- 2. Accelerator -> PyTorch build ----
:detect
set "KIND="
set "TORCH_CMD="
set "GPU="
if defined TORCH_COMMAND (
  set "KIND=custom"
  set "TORCH_CMD=!TORCH_COMMAND!"
  echo [2/5] Accelerator  TORCH_COMMAND is set: python -m !TORCH_COMMAND!
  goto venv
)

:: The adapters Windows knows, to name the GPU and to find AMD and Intel cards.
set "AMD_GPU="
set "ARC_GPU="
set "NV_GPU="
for /f "delims=" %%G in ('powershell -NoProfile -Command "(Get-CimInstance Win32_VideoController).Name" 2^>nul') do (
  echo %%G| findstr /i "Radeon AMD" >nul && if not defined AMD_GPU set "AMD_GPU=%%G"
  echo %%G| findstr /i "Intel" | findstr /i /c:"Arc" >nul && if not defined ARC_GPU set "ARC_GPU=%%G"
  echo %%G| findstr /i "NVIDIA" >nul && if not defined NV_GPU set "NV_GPU=%%G"
)

where nvidia-smi >nul 2>&1
if not errorlevel 1 (
  set "SMI_LINE="
  for /f "delims=" %%L in ('nvidia-smi 2^>nul ^| findstr /c:"CUDA Version"') do set "SMI_LINE=%%L"
  for /f "delims=" %%G in ('nvidia-smi --query-gpu^=name --format^=csv^,noheader 2^>nul') do if not defined GPU set "GPU=%%G"
  if not defined GPU set "GPU=!NV_GPU!"
  if not defined SMI_LINE (
    echo [2/5] Accelerator  nvidia-smi is installed but reports no driver
    echo       Check the NVIDIA driver ^(after a driver update, restart^). Looking for other GPUs.
  ) else (
    set "CUDA=!SMI_LINE:*CUDA Version=!"
    set "CUDA_NUM=0"
    for /f "tokens=1,2 delims=:. " %%A in ("!CUDA!") do (
      set "CUDA=%%A.%%B"
      set /a CUDA_NUM=%%A*100+%%B
    )
    set "CU_TAG="
    for %%P in (%CUDA_INDEXES%) do (
      for /f "tokens=1,2,3 delims=.:" %%a in ("%%P") do (
        set /a NEED=%%a*100+%%b
        if not defined CU_TAG if !CUDA_NUM! GEQ !NEED! set "CU_TAG=%%c"
      )
    )
    if defined CU_TAG (
      set "KIND=cuda"
      set "TORCH_CMD=pip install torch --index-url %TORCH_INDEX%/!CU_TAG!"
      echo [2/5] Accelerator  NVIDIA !GPU!, driver supports CUDA !CUDA! -^> PyTorch !CU_TAG! build
      goto venv
    )
    echo [2/5] Accelerator  NVIDIA !GPU!, but its driver supports only CUDA !CUDA!
    echo       PyTorch needs a driver for CUDA 11.8 or newer: update the NVIDIA driver, then run run.bat again.
  )
)

if defined ARC_GPU (
  set "KIND=xpu"
  set "TORCH_CMD=pip install torch --index-url %TORCH_INDEX%/xpu"
  echo [2/5] Accelerator  !ARC_GPU! -^> PyTorch xpu build
  goto venv
)

set "KIND=cpu"
set "TORCH_CMD=pip install torch --index-url %TORCH_INDEX%/cpu"
if defined AMD_GPU (
  echo [2/5] Accelerator  !AMD_GPU!: PyTorch has no ROCm build for Windows -^> PyTorch CPU build
  echo       To use this AMD GPU, run Sote Studio on Linux with ROCm ^(run.sh there^).
) else (
  echo [2/5] Accelerator  no supported GPU found -^> PyTorch CPU build
  if defined NV_GPU echo       Windows shows !NV_GPU!: install the NVIDIA driver ^(it brings nvidia-smi^), then run run.bat again.
)
echo       Generation on the CPU is slow ^(minutes per image^). run.bat --demo tries the whole UI on a tiny model, with no download.

:: ---- 3. .venv ----
:venv
set "FRESH=0"
if "%REINSTALL%"=="1" set "FRESH=1"
if not exist "%VENV%" set "FRESH=1"
if "%FRESH%"=="1" (
  if exist "%VENV%" (
    echo [3/5] Environment  starting over: .venv is removed and made again
    set "CMD=rmdir /s /q %VENV%"
    call :run
  ) else (
    echo [3/5] Environment  creating .venv
  )
  set "CMD=!PY! -m venv %VENV%"
  call :run || (
    if exist "%VENV%" rmdir /s /q "%VENV%"
    call :fail 3 Environment "!PY! could not create .venv" "Read the message above, then run run.bat again."
    exit /b 1
  )
) else (
  echo [3/5] Environment  .venv exists
)

:: ---- 4. PyTorch ----
set "OLD_torch_command="
set "OLD_torch_kind="
set "OLD_requirements="
if "%FRESH%"=="0" if exist "%STAMP%" (
  for /f "usebackq tokens=1* delims==" %%A in ("%STAMP%") do set "OLD_%%A=%%B"
)
set "HASH_PY=%VENV_PY%"
if not exist "%VENV_PY%" set "HASH_PY=!PY!"
set "REQ="
!HASH_PY! -c "import hashlib, pathlib, sys; print(hashlib.sha256(pathlib.Path(sys.argv[1]).read_bytes()).hexdigest())" requirements.txt > "%OUT%" 2>nul
set /p REQ=<"%OUT%"
if not defined REQ (
  call :fail 5 Packages "requirements.txt cannot be read" "Run run.bat from a complete copy of Sote Studio."
  exit /b 1
)
set "TORCH_FAIL=Check your network and disk space (PyTorch takes 1 to 5 GB), then run run.bat again. If pip found no matching torch, that build has none for Python !PYVER!: set PYTHON to a Python 3.12 and run run.bat --reinstall. TORCH_COMMAND chooses another build."

if not defined OLD_torch_command goto torch_install
if "!OLD_torch_command!"=="!TORCH_CMD!" (
  echo [4/5] PyTorch      up to date ^(python -m !TORCH_CMD!^)
  goto packages
)
if not "!KIND!"=="custom" if "!OLD_torch_kind!"=="custom" (
  echo [4/5] PyTorch      keeping the build installed with TORCH_COMMAND ^(python -m !OLD_torch_command!^)
  echo       run.bat --reinstall installs the detected build instead.
  set "TORCH_CMD=!OLD_torch_command!"
  set "KIND=!OLD_torch_kind!"
  goto packages
)
if "!KIND!"=="cpu" if not "!OLD_torch_kind!"=="cpu" (
  echo [4/5] PyTorch      no GPU found now: keeping the installed build ^(python -m !OLD_torch_command!^)
  echo       run.bat --reinstall installs the CPU build instead.
  set "TORCH_CMD=!OLD_torch_command!"
  set "KIND=!OLD_torch_kind!"
  goto packages
)
echo [4/5] PyTorch      the choice changed from python -m !OLD_torch_command!: replacing it
set "CMD=%VENV_PY% -m pip uninstall -y torch torchvision torchaudio"
call :run || (call :fail 4 PyTorch "the old PyTorch could not be removed" "Run run.bat --reinstall to start over." & exit /b 1)
set "CMD=%VENV_PY% -m !TORCH_CMD!"
call :run || (call :fail 4 PyTorch "python -m !TORCH_CMD! did not succeed" "!TORCH_FAIL!" & exit /b 1)
call :stamp_write "!OLD_requirements!"
goto packages
:torch_install
echo [4/5] PyTorch      installing: python -m !TORCH_CMD!
set "CMD=%VENV_PY% -m !TORCH_CMD!"
call :run || (call :fail 4 PyTorch "python -m !TORCH_CMD! did not succeed" "!TORCH_FAIL!" & exit /b 1)
call :stamp_write ""

:: ---- 5. requirements.txt ----
:packages
if "!OLD_requirements!"=="!REQ!" (
  echo [5/5] Packages     up to date ^(requirements.txt unchanged^)
) else (
  echo [5/5] Packages     installing requirements.txt
  set "CMD=%VENV_PY% -m pip install -r requirements.txt"
  call :run || (
    call :fail 5 Packages "a package from requirements.txt did not install" "Read pip's message above, then run run.bat again (run.bat --reinstall starts over)."
    exit /b 1
  )
  call :stamp_write "!REQ!"
)

:: ---- start ----
if "%DRY_RUN%"=="1" (
  echo Would start: %VENV_PY% app.py!APP_ARGS!
  echo Dry run: nothing was installed or started.
  exit /b 0
)
echo Starting: %VENV_PY% app.py%APP_ARGS%
setlocal DisableDelayedExpansion
"%VENV_PY%" app.py%APP_ARGS%
exit /b %errorlevel%

:: Run CMD, or only show it with --dry-run.
:run
if "%DRY_RUN%"=="1" (
  echo       would run: !CMD!
  exit /b 0
)
echo       running: !CMD!
!CMD!
exit /b %errorlevel%

:: The stamp: the PyTorch command, its kind and the hash of requirements.txt (%~1).
:stamp_write
if "%DRY_RUN%"=="1" exit /b 0
> "%STAMP%" (
  echo torch_command=!TORCH_CMD!
  echo torch_kind=!KIND!
  echo requirements=%~1
)
exit /b 0

:: A failure names its step and what to do: step, name, what went wrong, what to do.
:fail
>&2 echo error: step %~1/5 ^(%~2^) failed: %~3
>&2 echo        %~4
exit /b 1
