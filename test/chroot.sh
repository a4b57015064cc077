# test/chroot.sh — Debian chroots of the suites that ship other PostgreSQL
# majors.  Each is created once with debootstrap into a cache outside the
# repository and entered through a throw-away overlay, so nothing a run does
# (make install, a package installed and removed, clusters) stays in the
# cache.  Sourced by test/majors.sh; needs root.

CHROOT_CACHE=${ELMO_CHROOT_CACHE:-/var/cache/elmo_oscp/chroots}
DEBIAN_MIRROR=${ELMO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY=${ELMO_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# Bumped when chroots are set up differently: older ones are made anew.
CHROOT_FORMAT=1
CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The Debian suite that ships PostgreSQL $1; ELMO_SUITE_<major> overrides.
suite_for() {
  local var=ELMO_SUITE_$1
  if [ -n "${!var:-}" ]; then echo "${!var}"; return 0; fi
  case $1 in
    15) echo bookworm ;;
    17) echo trixie ;;
    18) echo forky ;;
    *) echo "no Debian suite known for PostgreSQL $1: set ELMO_SUITE_$1" >&2; return 1 ;;
  esac
}

# Mounts made by this shell, unmounted in reverse order by unmount_all.
MOUNTS=()
mount_at() {   # mount_at MOUNT-ARGS... TARGET
  mount "$@" && MOUNTS+=("${*: -1}")
}

# Kills what still runs inside ROOT (a cluster a failed test left), so it
# can be unmounted.
kill_inside() {
  local p
  case $1 in ''|/) return 0 ;; esac
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$1" ] && kill -9 "${p#/proc/}" 2>/dev/null
  done
  return 0
}

unmount_all() {
  local i m
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    m=${MOUNTS[i]}
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || echo "could not unmount $m" >&2
  done
  MOUNTS=()
}

# Before deleting DIR: whatever an interrupted run left mounted below it.
unmount_under() {
  local m
  for m in $(awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$m" || return 1
  done
}

# rm -rf that never follows a mount point into another file system (/dev).
remove_tree() {
  unmount_under "$1" && rm -rf --one-file-system "$1"
}

# What PostgreSQL and apt need inside ROOT: /proc, /dev, /dev/pts, its own
# /dev/shm (PostgreSQL's dynamic shared memory), the host's DNS settings.
mount_system() {
  local root=$1
  mount_at -t proc proc "$root/proc" &&
  mount_at --bind /dev "$root/dev" &&
  mount_at --bind /dev/pts "$root/dev/pts" &&
  mount_at -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm" &&
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
}

# in_chroot ROOT [VAR=VALUE...] -- COMMAND...: COMMAND in ROOT with a clean
# environment.
in_chroot() {
  local root=$1; shift
  local vars=()
  while [ "$1" != -- ]; do vars+=("$1"); shift; done
  shift
  chroot "$root" /usr/bin/env -i PATH="$CHROOT_PATH" HOME=/root LANG=C.UTF-8 TERM=dumb \
    DEBIAN_FRONTEND=noninteractive "${vars[@]}" "$@"
}

# chroot_prepare SUITE MAJOR LOG: the cached chroot of SUITE, with what the
# suite, the package build and the package test need for MAJOR.  Created
# when missing or incomplete; brought up to date (test/deps.sh) when present.
# Run it in a subshell: it holds the cache lock and mounts until it exits.
chroot_prepare() {
  local suite=$1 major=$2 log=$3 base=$CHROOT_CACHE/$1 root err lock
  mkdir -p "$CHROOT_CACHE"
  exec {lock}>"$CHROOT_CACHE/$suite.lock"
  flock -x "$lock"
  root=$base
  PREP_ROOT=$root
  trap 'kill_inside "$PREP_ROOT"; unmount_all' EXIT
  if [ "$(cat "$base/.elmo_oscp-complete" 2>/dev/null)" != "$CHROOT_FORMAT" ]; then
    root=$base.partial
    PREP_ROOT=$root
    remove_tree "$base" && remove_tree "$root" || return 1
    if ! err=$(curl -fsS -o /dev/null --max-time 30 "$DEBIAN_MIRROR/dists/$suite/InRelease" 2>&1); then
      echo "cannot create the $suite chroot: the Debian archive is unreachable: $DEBIAN_MIRROR/dists/$suite/InRelease: $err" >&2
      return 1
    fi
    echo "creating the $suite chroot in $base (debootstrap)"
    # the sid script builds any current suite, also ones this debootstrap predates
    if ! debootstrap --variant=minbase "$suite" "$root" "$DEBIAN_MIRROR" \
         /usr/share/debootstrap/scripts/sid >>"$log" 2>&1; then
      tail -n 15 "$log" >&2
      echo "cannot create the $suite chroot: debootstrap failed (above, the end of $log)" >&2
      return 1
    fi
    # as an installed Debian system has them: point releases and security
    # fixes (a package built on an up-to-date host needs its server's minor)
    {
      echo "deb $DEBIAN_MIRROR $suite main"
      curl -fso /dev/null --max-time 30 "$DEBIAN_MIRROR/dists/$suite-updates/InRelease" &&
        echo "deb $DEBIAN_MIRROR $suite-updates main"
      curl -fso /dev/null --max-time 30 "$DEBIAN_SECURITY/dists/$suite-security/InRelease" &&
        echo "deb $DEBIAN_SECURITY $suite-security main"
    } >"$root/etc/apt/sources.list"
    # testing's and unstable's Release files expire within a week; a chroot
    # of them must keep working after that
    echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/90elmo-oscp"
    # no documentation, manual pages or translations: less to unpack; no
    # fsync after each file (a chroot cut short is made anew)
    { printf 'path-exclude=/usr/share/%s/*\n' doc man info locale; echo force-unsafe-io; } \
      >"$root/etc/dpkg/dpkg.cfg.d/90elmo-oscp"
    # packages never start services of their own in here
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod +x "$root/usr/sbin/policy-rc.d"
  fi
  mount_system "$root" || { echo "cannot mount /proc, /dev into the $suite chroot" >&2; return 1; }
  # at creation, then once a day: the suite's updates
  if [ -z "$(find "$root/.elmo_oscp-updated" -mtime -1 2>/dev/null)" ]; then
    echo "updating the $suite chroot (apt-get upgrade)"
    if ! { in_chroot "$root" -- apt-get update -q &&
           in_chroot "$root" -- apt-get -y -q -o Dpkg::Options::=--force-confold upgrade; } >>"$log" 2>&1; then
      tail -n 15 "$log" >&2
      echo "cannot update the $suite chroot (above, the end of $log)" >&2
      return 1
    fi
    touch "$root/.elmo_oscp-updated"
  fi
  cp "$TOP/test/deps.sh" "$root/tmp/elmo_oscp-deps.sh"
  if ! in_chroot "$root" ELMO_PG_MAJOR="$major" -- bash /tmp/elmo_oscp-deps.sh --deb >>"$log" 2>&1; then
    tail -n 15 "$log" >&2
    echo "cannot install PostgreSQL $major and the test packages in the $suite chroot (above, the end of $log); does $suite ship postgresql-$major? (ELMO_SUITE_$major chooses another suite)" >&2
    return 1
  fi
  in_chroot "$root" -- apt-get clean
  kill_inside "$root"
  unmount_all
  if [ "$root" != "$base" ]; then
    echo "$CHROOT_FORMAT" >"$root/.elmo_oscp-complete"
    mv "$root" "$base"
  fi
}

# chroot_enter SUITE RUNDIR: mounts a throw-away overlay of the cached
# chroot at RUNDIR/root, with /proc, /dev ... inside, and prints its path.
# Holds a shared lock on the cache (fd kept open) until the shell exits.
chroot_enter() {
  local suite=$1 run=$2 lock
  exec {lock}>"$CHROOT_CACHE/$suite.lock"
  flock -s "$lock"
  mkdir -p "$run/upper" "$run/work" "$run/root"
  mount_at -t overlay overlay \
    -o "lowerdir=$CHROOT_CACHE/$suite,upperdir=$run/upper,workdir=$run/work" "$run/root" &&
  mount_system "$run/root"
}
