#!/usr/bin/env bash
# copy-source.sh DEST — copies the source tree (in a git checkout: the tracked
# and the new, not ignored files; elsewhere: everything but .git, dist/ and
# build products) to DEST, so a build there neither sees nor leaves objects
# of another build.
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
dest=$1
mkdir -p "$dest"
if git -C "$TOP" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$TOP" ls-files -z --cached --others --exclude-standard |
    (cd "$TOP" && tar --null --no-recursion -T - -cf - --ignore-failed-read 2>/dev/null) | tar -C "$dest" -xf -
else
  tar -C "$TOP" --exclude-vcs --exclude=./dist --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
      --exclude=./sim/elmo-sim --exclude=./results -cf - . | tar -C "$dest" -xf -
fi
