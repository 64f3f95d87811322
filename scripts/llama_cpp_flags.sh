# Prints the compiler flags llama.cpp is built with here: llama-cpp-python's wheel (ensure_venv.sh)
# and llama-server for the benchmarks (benchmarks/llama_server.py), so that both run the same code.
#
# llama.cpp's AMX kernels segfault in the first batched decode on some Sapphire Rapids machines
# (ggml_backend_amx_mul_mat; ggml-org/llama.cpp#20824, closed without a fix), and a native build
# turns them on wherever the CPU has AMX. They are turned off: explicit -mno-* flags win over
# -march=native whatever their order. Nothing is printed where the compiler does not know them.
flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
if [ "$(uname -m)" = x86_64 ] && echo 'int main(void) { return 0; }' | "${CC:-cc}" $flags -x c -o /dev/null - 2>/dev/null; then
  echo "$flags"
fi
