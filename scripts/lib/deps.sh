# Installs the Debian packages Divan's commands need, only when something is missing.
divan_install_deps() {
    local missing=()
    command -v swift >/dev/null || { echo "Swift 6 is required (https://swift.org/install)" >&2; exit 1; }
    # redis-tools and python3-redis: the Redis front end's tests drive redis-cli and redis-py.
    local packages=(curl python3 nghttp2-client wrk pkg-config librocksdb-dev redis-tools python3-redis)
    for pkg in "${packages[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
    fi
}
