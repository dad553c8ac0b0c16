#!/usr/bin/env bash
# Installs what connbeat needs on a Debian machine, and only what is missing.
#   scripts/install-deps.sh run    packages to build and run the agent
#   scripts/install-deps.sh test   the above plus what the test suite drives
# Uses sudo when not root. Idempotent: a second run installs nothing.
set -euo pipefail

RUN_PKGS=(pkg-config make gcc libpcap-dev libssl-dev zlib1g-dev iproute2 procps util-linux ca-certificates)
TEST_PKGS=(tcpdump tshark curl python3 dnsutils redis-server redis-tools mariadb-server
  mariadb-client postgresql postgresql-client dnsmasq-base nginx-light openssl busybox-static
  chromium)
# Each further capability adds its own line: TEST_PKGS+=(package ...) # what it is for
TEST_PKGS+=(rabbitmq-server) # AMQP broker of the AMQP tests (tests/services/start-rabbitmq.sh)
TEST_PKGS+=(iputils-ping) # ping and ping -6 of the ICMP and flows live tests (dnsmasq-base, busybox-static: DHCP)
TEST_PKGS+=(memcached libmemcached-tools) # memcache server and its clients (text, binary, UDP)
TEST_PKGS+=(swaks libnet-ssleay-perl sip-tester) # SMTP client (with STARTTLS) and sipp, for the live SMTP and SIP tests
TEST_PKGS+=(thrift-compiler) # Thrift server and client generated from an IDL (live Thrift tests)
# Python packages the tests drive, installed with the pip of the python3 the tests run.
# One line per capability, so that each says why it is here: TEST_PIP+=(package ...) # why
TEST_PIP=(communityid) # Community ID reference implementation (oracle)
TEST_PIP+=(pymemcache pymongo mockupdb python-snappy backports.zstd) # memcache client; MongoDB wire server and client, compressors
TEST_PIP+=(pika) # AMQP 0-9-1 client of the AMQP tests (tests/services/amqp-session.py)
TEST_PIP+=(aiosmtpd) # the SMTP server of the live SMTP test
TEST_PIP+=(osmem-server) # in-memory OpenSearch-compatible server for the Elasticsearch output tests
TEST_PIP+=(thrift cassandra-driver lz4 python-snappy) # Thrift runtime of the generated code; CQL frames built by a driver's protocol classes, compressed

want=("${RUN_PKGS[@]}")
if [[ "${1:-run}" == "test" ]]; then
  want+=("${TEST_PKGS[@]}")
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo (the Rust toolchain) is required and was not found on PATH" >&2
  exit 1
fi

# The Community ID reference implementation, a test oracle: installed with the pip of the
# python3 the tests run (the first on PATH).
install_test_python() {
  [[ "${1:-run}" == "test" ]] || return 0
  local need=()
  for spec in "${TEST_PIP[@]}"; do
    python3 -m pip show -q "${spec%%[=<>]*}" >/dev/null 2>&1 || need+=("$spec")
  done
  ((${#need[@]} == 0)) && return 0
  echo "install-deps: pip installing ${need[*]}"
  python3 -m pip install -q "${need[@]}" || python3 -m pip install -q --break-system-packages "${need[@]}"
}

if ((${#missing[@]} == 0)); then
  install_test_python "${1:-run}"
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  SUDO=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer once, non-interactively.
echo "wireshark-common wireshark-common/install-setuid boolean false" | "${SUDO[@]}" debconf-set-selections
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Servers that Debian starts on install would hold the test ports; tests start their own.
for svc in redis-server mariadb postgresql nginx; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    "${SUDO[@]}" systemctl stop "$svc" || true
  fi
done
install_test_python "${1:-run}"
echo "install-deps: done"
