# Sourced by scripts/test and scripts/bench: installs, with apt-get, the Debian packages the
# build, the tests and the benchmarks need, when they are missing. Idempotent and quiet when
# everything is present.

# command-or-file  package: what building styrman and running a node need
STYRMAN_NODE_PACKAGES=(
  "protoc                                        protobuf-compiler"  # etcd-client's build script
  "/usr/include/google/protobuf/descriptor.proto libprotobuf-dev"    # the well-known protos it imports
  "curl                                          curl"               # raw HTTPS requests in tests
  "/usr/lib/x86_64-linux-gnu/libc.a             libc6-dev"          # the static pause binary (crates/images)
  "containerd                                    containerd"         # the node's container runtime (and ctr)
  "runc                                          runc"               # what containerd runs containers with
  "/usr/lib/cni/bridge                           containernetworking-plugins"  # pod networking
  "nft                                           nftables"           # Services (the proxy)
  "dpkg-deb                                      dpkg"               # scripts/images unpacks Debian packages
)
# ... and what the tests and benchmarks need besides
STYRMAN_PACKAGES=(
  "${STYRMAN_NODE_PACKAGES[@]}"
  "etcd                                          etcd-server"        # the HA backend, started by tests
  "etcdctl                                       etcd-client"        # what users inspect keys with
)

# Installs the packages named in the array given by name (default: every package).
install_missing() {
  local -n wanted=${1:-STYRMAN_PACKAGES}
  local missing=() entry what pkg
  for entry in "${wanted[@]}"; do
    read -r what pkg <<<"$entry"
    if [[ "$what" == /* ]]; then
      [[ -e "$what" ]] || missing+=("$pkg")
    else
      command -v "$what" >/dev/null 2>&1 || missing+=("$pkg")
    fi
  done
  if ((${#missing[@]})); then
    echo "installing missing packages: ${missing[*]}" >&2
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

# What building styrman and running its node need.
ensure_node_packages() {
  install_missing STYRMAN_NODE_PACKAGES
}

# Everything the tests and benchmarks need.
ensure_packages() {
  install_missing STYRMAN_PACKAGES
  if ! python3 -c 'import kubernetes, sys; sys.exit(not kubernetes.__version__.startswith("33."))' 2>/dev/null; then
    echo "installing the Python kubernetes client 33.x" >&2
    python3 -m pip install --quiet --disable-pip-version-check "kubernetes==33.*" >&2
  fi
  if ! command -v kubectl >/dev/null 2>&1; then
    echo "kubectl is not on PATH: the tests drive a real kubectl (1.32 or newer)." >&2
    echo "Debian's kubernetes-client is too old; install kubectl from the Kubernetes release." >&2
    return 1
  fi
  if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest" >&2
    cargo install --locked cargo-nextest >&2
  fi
}
