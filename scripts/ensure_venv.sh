# Sourced by run.sh and test.sh: create .venv and install a requirements file into it,
# skipping pip when that file (and what it includes) has not changed since the last install.
requirements="$1"
python_bin="${PYTHON:-python3.11}"
command -v "$python_bin" >/dev/null 2>&1 || python_bin=python3
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip wheel
fi
llama_cpp_flags="$(bash scripts/llama_cpp_flags.sh)"
stamp=".venv/.installed-$( (cat requirements/*.txt; echo "$llama_cpp_flags") | sha256sum | cut -c1-16)-$(basename "$requirements")"
if [ ! -f "$stamp" ]; then
  echo "Installing $requirements into .venv (llama-cpp-python compiles on first install: ~10 min)..." >&2
  # llama-cpp-python is built with our flags (scripts/llama_cpp_flags.sh) into a wheelhouse of its
  # own, keyed by version and flags: pip's cache keys a built wheel by its source alone, so it
  # would hand back a wheel built with other flags.
  llama_version="$(sed -n 's/^llama-cpp-python==//p' requirements/base.txt)"
  wheelhouse="$HOME/.cache/inference-platform/wheels/llama-cpp-python-$llama_version-$(echo "$llama_cpp_flags" | sha256sum | cut -c1-12)"
  if ! ls "$wheelhouse"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_C_FLAGS='$llama_cpp_flags' -DCMAKE_CXX_FLAGS='$llama_cpp_flags'" \
      .venv/bin/python -m pip wheel --quiet --no-deps --no-cache-dir "llama-cpp-python==$llama_version" -w "$wheelhouse"
  fi
  .venv/bin/python -m pip install --quiet --force-reinstall --no-deps "$wheelhouse"/llama_cpp_python-*.whl
  .venv/bin/python -m pip install --quiet --find-links "$wheelhouse" -r "$requirements"
  touch "$stamp"
fi
