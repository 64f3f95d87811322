# Sourced by run.sh and test.sh: create .venv and install a requirements file into it,
# skipping pip when that file (and what it includes) has not changed since the last install.
requirements="$1"
python_bin="${PYTHON:-python3.11}"
command -v "$python_bin" >/dev/null 2>&1 || python_bin=python3
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip wheel
fi
stamp=".venv/.installed-$(cat requirements/*.txt | sha256sum | cut -c1-16)-$(basename "$requirements")"
if [ ! -f "$stamp" ]; then
  echo "Installing $requirements into .venv (llama-cpp-python compiles on first install: ~10 min)..." >&2
  .venv/bin/python -m pip install --quiet -r "$requirements"
  touch "$stamp"
fi
