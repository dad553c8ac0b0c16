# Shared helpers of the start-*.sh scripts: install what is missing, wait for a port.
# Every script prints one line "pid=<pid> port=<port> dir=<dir>" on success; the caller
# stops the server with `kill <pid>` (and removes dir).

need() { # need <command> <debian package>
  if command -v "$1" >/dev/null 2>&1 || [[ -x "$1" ]]; then return 0; fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing $1 (Debian package $2) and not root: cannot install" >&2
    exit 3
  fi
  echo "installing $2" >&2
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
  apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }
}

wait_tcp() { # wait_tcp <port> <pid>: until 127.0.0.1:<port> accepts, or the server died
  for _ in $(seq 1 300); do
    if ! kill -0 "$2" 2>/dev/null; then echo "server exited before listening on $1" >&2; return 1; fi
    if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for port $1" >&2
  return 1
}

wait_udp() { # wait_udp <port> <pid>: until something is bound to udp 127.0.0.1:<port>
  for _ in $(seq 1 300); do
    if ! kill -0 "$2" 2>/dev/null; then echo "server exited before listening on $1" >&2; return 1; fi
    if ss -Hlun "sport = :$1" 2>/dev/null | grep -q .; then return 0; fi
    sleep 0.1
  done
  return 1
}
