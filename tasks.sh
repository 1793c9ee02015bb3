#!/usr/bin/env bash
# The project's commands on a fresh Debian machine.  Each installs what it needs first:
# Debian packages with apt-get (as root, or through sudo) and a virtual environment in .venv.
#
#   ./tasks.sh demo    mount a sample directory, run a real workload in it, report, unmount
#   ./tasks.sh test    lint, type-check and run the whole test suite
#   ./tasks.sh bench   benchmark the mount against the native directory (benchmarks/)
#   ./tasks.sh image   build the driver's container image into dist/image.oci.tar (tools/image.py)
set -euo pipefail
cd "$(dirname "$0")"

# Debian's python3 is used, not whatever python3 is first on PATH: it is the same on every
# Debian machine, the nobody user can run it, and libpython3.11-testsuite gives it CPython's
# own test suites, which the tests run inside the mount. chromium renders the HTML report in its
# test; jq is what the README's examples read JSON with. Prometheus, Alertmanager, Jaeger and the
# collector are built from their Go modules at the versions the charts deploy (tools/gobuild.toml),
# not Debian's (Prometheus 2.42, Alertmanager 0.25).
PYTHON=/usr/bin/python3
SYSTEM_PACKAGES=(
  fuse3 libfuse3-dev pkg-config gcc
  python3 python3-dev python3-venv libpython3.11-testsuite
  fio attr tar jq
  chromium
)
# The image is built with buildah (as root, overlay storage, chroot isolation: no daemon, no
# cgroups) on a base image made with debootstrap.
IMAGE_PACKAGES=(buildah debootstrap)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt-get and debconf talk a lot even with -qq: their output goes to build/apt.log, and the terminal
# gets it only when they fail (the log's path and last lines), as tools/steps.py does for the image.
APT_LOG=build/apt.log
apt_get() {
  mkdir -p "$(dirname "$APT_LOG")"
  echo "\$ apt-get $*" >>"$APT_LOG"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get "$@" >>"$APT_LOG" 2>&1 </dev/null; then
    echo "apt-get $1 failed; its output is in $APT_LOG, which ends:" >&2
    tail -n 25 "$APT_LOG" | sed 's/^/  /' >&2
    return 1
  fi
}

install_system_packages() {
  local missing=() package
  for package in "${SYSTEM_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing Debian packages: ${missing[*]} (output: $APT_LOG)"
    apt_get update
    apt_get install -y --no-install-recommends "${missing[@]}"
  fi
}

setup_python() {
  local stamp=.venv/.installed wanted
  wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ] || [ "$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')" != "/usr" ]; then
    rm -rf .venv
    "$PYTHON" -m venv .venv
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "==> installing the Python environment in .venv"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev]'
    echo "$wanted" > "$stamp"
  fi
  # The CSI driver's protobuf module is generated from interposer/csi/csi.proto, never committed.
  if [ ! interposer/csi/csi_pb2.py -nt interposer/csi/csi.proto ]; then
    .venv/bin/python -m interposer.csi.protogen
  fi
}

# The dashboards are type-checked with Grafana's own types (npm @grafana/schema and tsc).
setup_node() {
  local stamp=dashboards/typecheck/node_modules/.installed wanted
  if ! command -v npm >/dev/null; then
    echo "==> installing Debian packages: nodejs npm (output: $APT_LOG)"
    apt_get update
    apt_get install -y --no-install-recommends nodejs npm
  fi
  wanted=$(sha256sum dashboards/typecheck/package-lock.json | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "==> installing the dashboard type checker (npm ci)"
    npm ci --prefix dashboards/typecheck --no-audit --no-fund --loglevel=error
    echo "$wanted" > "$stamp"
  fi
}

# The stack's Go programs (helm, helmfile, csi-sanity, ...), built from their Go modules into .tools/ at the
# versions tools/gobuild.toml records; a second run finds them built and does nothing.
build_go_programs() {
  echo "==> Go programs (tools/gobuild.toml)"
  .venv/bin/python -m tools.gobuild
}

build_image() {
  .venv/bin/python -m tools.image "$@"
}

generate() {
  .venv/bin/python -m dashboards
  .venv/bin/python -m alerts
  .venv/bin/python -m interposer.config_reference
  .venv/bin/python -m interposer.metrics_reference
  .venv/bin/python -m interposer.csi.crd
}

command=${1:-}
case "$command" in
  demo)
    install_system_packages
    setup_python
    # The local stack the demo starts (interposer stack up).
    .venv/bin/python -m tools.gobuild prometheus alertmanager jaeger otelcol
    exec .venv/bin/interposer demo "${@:2}"
    ;;
  test)
    install_system_packages "${IMAGE_PACKAGES[@]}"
    setup_python
    setup_node
    build_go_programs
    # tests/test_image.py runs the image this writes.
    echo "==> image"
    build_image
    echo "==> ruff"
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    echo "==> mypy"
    .venv/bin/mypy
    echo "==> pytest"
    PATH="$PWD/.tools/bin:$PATH" HELM_PLUGINS="$PWD/.tools/helm/plugins" exec .venv/bin/pytest "${@:2}"
    ;;
  bench)
    install_system_packages
    setup_python
    exec .venv/bin/python -m benchmarks "${@:2}"
    ;;
  image)
    install_system_packages "${IMAGE_PACKAGES[@]}"
    setup_python
    build_image "${@:2}"
    ;;
  generate)
    setup_python
    generate
    ;;
  *)
    echo "usage: $0 demo|test|bench|image|generate [args...]" >&2
    exit 2
    ;;
esac
