#!/usr/bin/env bash
# Peak memory of one command, split as the issue asks: anonymous memory (what
# the process allocates: buffers, tables) against the mapped file and page
# cache pages it touches (RssFile, given back under memory pressure). Polls
# /proc/PID/status every few ms, so a peak shorter than that can be missed;
# VmHWM (the kernel's exact peak of the sum) is printed beside.
#
#   scripts/peak-rss.sh target/release/weightlab decompress -j 2 A.wlab -o B
set -euo pipefail
"$@" >/dev/null &
pid=$!
anon=0; file=0; hwm=0
while kill -0 "$pid" 2>/dev/null; do
  if s=$(cat "/proc/$pid/status" 2>/dev/null); then
    a=$(awk '/^RssAnon:/ {print $2}' <<<"$s"); f=$(awk '/^RssFile:/ {print $2}' <<<"$s"); h=$(awk '/^VmHWM:/ {print $2}' <<<"$s")
    [ -n "$a" ] && [ "$a" -gt "$anon" ] && anon=$a
    [ -n "$f" ] && [ "$f" -gt "$file" ] && file=$f
    [ -n "$h" ] && [ "$h" -gt "$hwm" ] && hwm=$h
  fi
  sleep 0.003
done
wait "$pid"
echo "peak RssAnon $((anon / 1024)) MiB, peak RssFile $((file / 1024)) MiB, VmHWM $((hwm / 1024)) MiB: $*"
