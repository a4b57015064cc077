#!/usr/bin/env bash
# build-pg.sh DIR — PostgreSQL 15 built for memcheck, installed under DIR/install.
#
# Debian's server is not built with USE_VALGRIND, so to memcheck a chunk
# palloc'd in a memory context that was since reset (or deleted and kept on
# the context free list) is still addressable memory: reading it is no error.
# Built with -DUSE_VALGRIND, the allocator marks freed chunks and reset
# blocks no-access, and --enable-cassert adds clobbering of freed memory and
# PostgreSQL's own assertions (also compiled into elmo_oscp.so built against
# it).  The source is Debian's own postgresql-15 source package (the
# upstream tarball, checksummed by apt), fetched through a private apt list
# so the system's apt configuration is left alone.  Takes ~6 min on 2 cores,
# once: the result is reused until DIR is deleted.
set -euo pipefail
DIR=$1
mkdir -p "$DIR"
cd "$DIR"
[ -x install/bin/postgres.bin ] && exit 0

APT=$DIR/apt
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" src
cat > "$APT/sources.list" <<'LIST'
deb-src http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian bookworm-updates main
deb-src http://deb.debian.org/debian-security bookworm-security main
LIST
apt_opts=(-o "Dir::Etc::SourceList=$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -q)
echo "== fetching the postgresql-15 source package"
apt-get "${apt_opts[@]}" update >/dev/null
# Newest first; a mirror may carry a security update's binaries but not its
# source, and any 15.x serves (the extension is built against this one).
got=
for v in $(apt-cache "${apt_opts[@]}" showsrc postgresql-15 | sed -n 's/^Version: //p' | sort -rVu); do
  (cd src && apt-get "${apt_opts[@]}" source --download-only "postgresql-15=$v" >/dev/null 2>&1) && { got=$v; break; }
done
[ -n "$got" ] || { echo "could not download the postgresql-15 source package" >&2; exit 1; }
tarball=$(ls src/postgresql-15_*.orig.tar.* | sort -V | tail -n1)
tar -C src -xf "$tarball"
srcdir=$(ls -d src/postgresql-15.*/ | sort -V | tail -n1)

echo "== building ${srcdir%/} with USE_VALGRIND and assertions (once; a few minutes)"
cd "$srcdir"
# -O1: stacks stay readable without the cost of -O0.  lz4 as Debian's build
# has it (the extension compresses bodies with it when the server can).
./configure --prefix="$DIR/install" --enable-debug --enable-cassert \
    --with-lz4 --without-icu --without-readline \
    CPPFLAGS="-DUSE_VALGRIND" CFLAGS="-O1 -g -fno-omit-frame-pointer" \
    >"$DIR/configure.log" 2>&1 || { tail -n 30 "$DIR/configure.log"; exit 1; }
make -s -j"$(nproc)" >"$DIR/build.log" 2>&1 || { tail -n 40 "$DIR/build.log"; exit 1; }
make -s install >>"$DIR/build.log" 2>&1 || { tail -n 40 "$DIR/build.log"; exit 1; }

# pgTAP is plain SQL: Debian's copy serves this server too.
cp /usr/share/postgresql/15/extension/pgtap* "$("$DIR/install/bin/pg_config" --sharedir)/extension/"

# The sources stay (memcheck's stacks name their lines); objects and
# downloads go.
make -s clean >/dev/null 2>&1 || true
rm -rf "$APT" "$DIR"/src/postgresql-15_*

# The server binary moves aside; "postgres" becomes the memcheck wrapper.
mv "$DIR/install/bin/postgres" "$DIR/install/bin/postgres.bin"
chmod -R a+rX "$DIR"
