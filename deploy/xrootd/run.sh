#!/bin/sh
# Run an XRootD origin, a forwarding proxy and an XCache on one host (Debian xrootd-server).
#
#   deploy/xrootd/run.sh start|stop|status [origin|proxy|xcache ...]   (default: all three)
#
# Settings (environment; defaults in brackets):
#   XRD_BASE        state directory: admin files, logs, cache          [/var/lib/mlaas4hep-xrootd]
#   ORIGIN_DATA     directory the origin serves                        [$XRD_BASE/data]
#   ORIGIN_PORT     origin port                                        [1094]
#   PROXY_PORT      forwarding proxy port                              [1095]
#   PROXY_PERMIT    origin hosts the proxy may reach (pss.permit)      [localhost]
#   CACHE_PORT      XCache port                                        [1096]
#   CACHE_ORIGIN    host:port the XCache reads from                    [localhost:$ORIGIN_PORT]
#   CACHE_DIR       cache storage                                      [$XRD_BASE/cache]
#   CACHE_RAM       XCache memory for blocks in flight (>= 1g)         [1g]
#   XRD_USER        user to run as when started as root                [xrootd]
# The services run as daemons; logs go to $XRD_BASE/<name>/log/<name>/xrootd.log.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
XRD_BASE=${XRD_BASE:-/var/lib/mlaas4hep-xrootd}
ORIGIN_DATA=${ORIGIN_DATA:-$XRD_BASE/data}
ORIGIN_PORT=${ORIGIN_PORT:-1094}
PROXY_PORT=${PROXY_PORT:-1095}
PROXY_PERMIT=${PROXY_PERMIT:-localhost}
CACHE_PORT=${CACHE_PORT:-1096}
CACHE_ORIGIN=${CACHE_ORIGIN:-localhost:$ORIGIN_PORT}
CACHE_DIR=${CACHE_DIR:-$XRD_BASE/cache}
CACHE_RAM=${CACHE_RAM:-1g}
XRD_USER=${XRD_USER:-xrootd}

command -v xrootd >/dev/null || { echo "xrootd not found: apt-get install xrootd-server" >&2; exit 1; }

user_args() {
    if [ "$(id -u)" = 0 ]; then echo "-R $XRD_USER"; fi
}

own() {  # directories the server writes must belong to the user it runs as
    mkdir -p "$@"
    if [ "$(id -u)" = 0 ]; then chown "$XRD_USER" "$@"; fi
}

pidfile() { echo "$XRD_BASE/$1/admin/$1/xrootd.pid"; }

start() {
    name=$1
    admin=$XRD_BASE/$name/admin
    own "$admin" "$XRD_BASE/$name/log"
    case $name in
        origin)
            mkdir -p "$ORIGIN_DATA"
            env XRD_PORT="$ORIGIN_PORT" XRD_ADMIN="$admin" XRD_DATA="$ORIGIN_DATA" \
                xrootd -b -c "$HERE/origin.cfg" -n "$name" -l "$XRD_BASE/$name/log/xrootd.log" $(user_args) ;;
        proxy)
            env XRD_PORT="$PROXY_PORT" XRD_ADMIN="$admin" XRD_PERMIT="$PROXY_PERMIT" \
                xrootd -b -c "$HERE/proxy.cfg" -n "$name" -l "$XRD_BASE/$name/log/xrootd.log" $(user_args) ;;
        xcache)
            own "$CACHE_DIR"
            env XRD_PORT="$CACHE_PORT" XRD_ADMIN="$admin" XRD_ORIGIN="$CACHE_ORIGIN" \
                XRD_CACHE_DIR="$CACHE_DIR" XRD_RAM="$CACHE_RAM" \
                xrootd -b -c "$HERE/xcache.cfg" -n "$name" -l "$XRD_BASE/$name/log/xrootd.log" $(user_args) ;;
        *) echo "unknown service '$name' (origin, proxy, xcache)" >&2; exit 2 ;;
    esac
    echo "started $name (log: $XRD_BASE/$name/log/$name/xrootd.log)"
}

stop() {
    pid=$(cat "$(pidfile "$1")" 2>/dev/null || true)
    if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then echo "stopped $1 ($pid)"; else echo "$1 not running"; fi
}

status() {
    pid=$(cat "$(pidfile "$1")" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$1 running ($pid)"; else echo "$1 stopped"; fi
}

action=${1:-}
[ $# -gt 0 ] && shift
services=${*:-origin proxy xcache}
case $action in
    start|stop|status) for s in $services; do $action "$s"; done ;;
    *) echo "usage: $0 start|stop|status [origin|proxy|xcache ...]" >&2; exit 2 ;;
esac
