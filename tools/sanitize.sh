#!/usr/bin/env bash
# Build convcore's kernels with AddressSanitizer + UndefinedBehaviorSanitizer
# (setup.py: CONVCORE_SANITIZE=1) in a temporary copy of the checkout, then
# run the kernel tests under them. The working tree's own build is untouched.
#
#   tools/sanitize.sh                 # the default kernel test set
#   tools/sanitize.sh tests/functional/test_pooling.py -k nan   # any pytest arguments
#
# Exit status: pytest's (non-zero on any sanitizer report, since both
# sanitizers are told to halt on the first error).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/convcore-sanitize.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# Tracked and new (not ignored) files only: no .so/.c of the normal build.
(cd "$src" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$src" && xargs -0 cp --parents -t "$work")
cd "$work"

echo "sanitize: building in $work" >&2
CONVCORE_SANITIZE=1 python setup.py build_ext --inplace -j "${JOBS:-2}" \
    > "$work/build.log" 2>&1 || { tail -40 "$work/build.log"; exit 1; }

# The extension links libasan, but the interpreter does not: ASan must be
# the first library loaded, hence LD_PRELOAD. CPython and numpy keep
# allocations alive on purpose at exit, so leak detection is off.
asan="$(gcc -print-file-name=libasan.so)"
ubsan="$(gcc -print-file-name=libubsan.so)"
export LD_PRELOAD="$asan $ubsan"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$work"
# pytest's own import mode must find this build, not an installed one.
if [ "$#" -eq 0 ]; then
    set -- tests/functional/test_conv_grid.py tests/functional/test_conv_errors.py tests/functional/test_conv_gradcheck.py \
        tests/kernels/test_blas_im2col.py tests/functional/test_pooling.py tests/functional/test_batch_norm.py \
        tests/functional/test_lrn.py tests/functional/test_norms.py tests/functional/test_activations.py \
        tests/functional/test_linear.py tests/functional/test_losses.py tests/functional/test_fuzz.py \
        tests/functional/test_limits.py tests/functional/test_nan.py tests/functional/test_leaks.py \
        tests/runtime/test_thread_safety.py tests/nn/test_hostile_files.py
fi
existing=()
for a in "$@"; do
    case "$a" in tests/*.py) [ -e "$a" ] && existing+=("$a") ;; *) existing+=("$a") ;; esac
done
so="$(python -c "import convcore._kernels.conv_direct as m; print(m.__file__)")"
case "$so" in "$work"/*) ;; *) echo "sanitize: imported $so, not the sanitized build" >&2; exit 1 ;; esac
ldd "$so" | grep libasan > /dev/null || { echo "sanitize: $so is not linked with ASan" >&2; exit 1; }
# Self-check: a kernel fed an index one past its output (what floor 2
# exists to prevent) must be caught, or a clean run below would mean nothing.
if python - <<'PY' 2> "$work/selfcheck.log"
import numpy as np
from convcore._kernels import pool
gy = np.ones((1, 1, 1, 1)); gx = np.empty((1, 1, 2, 2))
pool.max_pool2d_backward(gy, np.full((1, 1, 1, 1), 4, np.int64), gx, 1)
PY
then
    echo "sanitize: self-check FAILED: an out-of-bounds write went unnoticed" >&2; exit 1
fi
grep -q "AddressSanitizer: heap-buffer-overflow" "$work/selfcheck.log" ||
    { cat "$work/selfcheck.log" >&2; echo "sanitize: self-check: no ASan report" >&2; exit 1; }
echo "sanitize: self-check ok (ASan caught a planted out-of-bounds write)" >&2
echo "sanitize: testing $so (ASan + UBSan)" >&2
python -m pytest -q -o addopts="--import-mode=importlib" -p no:cacheprovider -rfE "${existing[@]}"
