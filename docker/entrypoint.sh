#!/bin/sh
# imgorigin container entrypoint (POSIX sh).
#
# IMGORIGIN_MALLOC picks the memory allocator, as imgproxy's IMGPROXY_MALLOC does:
#   malloc    glibc's allocator (default; the image sets MALLOC_ARENA_MAX=2)
#   jemalloc  Debian's libjemalloc2, loaded with LD_PRELOAD
# Then it execs the command, so the server is PID 1 and receives SIGTERM itself.
# `docker run IMAGE sign ...` (or serve, health, version) is short for `imgorigin sign ...`.
set -eu

malloc="${IMGORIGIN_MALLOC:-malloc}"
case "$malloc" in
  malloc | "")
    ;;
  jemalloc)
    jemalloc=""
    for candidate in /usr/lib/*-linux-gnu/libjemalloc.so.2 /usr/lib/libjemalloc.so.2; do
      if [ -f "$candidate" ]; then
        jemalloc="$candidate"
        break
      fi
    done
    if [ -z "$jemalloc" ]; then
      echo "imgorigin-entrypoint: IMGORIGIN_MALLOC=jemalloc but libjemalloc.so.2 is not installed" >&2
      exit 1
    fi
    LD_PRELOAD="$jemalloc${LD_PRELOAD:+:$LD_PRELOAD}"
    export LD_PRELOAD
    ;;
  *)
    echo "imgorigin-entrypoint: IMGORIGIN_MALLOC=$malloc: expected malloc or jemalloc" >&2
    exit 1
    ;;
esac

if [ "$#" -eq 0 ]; then
  set -- imgorigin serve
fi
case "$1" in
  serve | sign | health | version)
    set -- imgorigin "$@"
    ;;
esac

exec "$@"
