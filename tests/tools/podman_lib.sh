#!/bin/bash
# Shared helpers for the tool tests that run real containers with podman
# (tests/tools/podman_test.sh). Source it after mount_lib.sh.
#
#   podman_require       skip (exit 77) with the reason when podman cannot run
#                        a container here at all; else sets PODMAN_TAG, a
#                        prefix unique to this run for container names
#   podman_image         sets IMAGE: a tiny image built offline from this
#                        host's own files (in $TMP, the test's private temp
#                        dir), once per content (the tag is a hash of what
#                        went in and of this recipe), then reused
#   podman_run ARGS...   podman run --rm with what this host needs (runc, no
#                        network, explicit ulimits), a unique --name
#   podman_cleanup       removes every container this run made (call it from
#                        the test's EXIT trap)
#
# Storage is root's default (/var/lib/containers/storage): podman locks it, so
# two runs of the test (two build configurations at once) share it safely.
# Every container is named "$PODMAN_TAG-N" and removed at exit even when its
# start failed. Images are never removed: the next run reuses them.
#
# Why these flags: Debian 12's crun fails on hosts with hybrid cgroups, and
# without --ulimit podman asks for limits the host may not grant; no test
# needs a network, and --network=none needs neither slirp4netns nor netavark.

PODMAN_TAG=
PODMAN_N=0
IMAGE=
PODMAN=(podman --runtime runc)

# podman_require: skip only where podman truly cannot run.
podman_require() {
  [ "$(id -u)" = 0 ] || { echo "SKIP: podman tests need root"; exit 77; }
  local t
  for t in podman runc ldd sha256sum tar timeout; do
    command -v "$t" >/dev/null || { echo "SKIP: $t not installed (tools/install-deps.sh)"; exit 77; }
  done
  local out
  if ! out=$("${PODMAN[@]}" info --format '{{.Store.GraphDriverName}}' 2>&1); then
    echo "SKIP: podman cannot run here: $out"
    exit 77
  fi
  PODMAN_TAG=pcifs-test-$$-$RANDOM
}

# The files of the image: programs, everything ldd says they load, and the
# data lspci reads.
podman_image_files() {
  local p
  for p in sh dash cat dd xxd id ls stat lspci setpci; do command -v "$p"; done
  for p in dash cat dd xxd id ls stat lspci setpci; do
    ldd "$(command -v "$p")" | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}'
  done
  # pciutils reads /usr/share/misc/pci.ids (or pci.ids.gz; lspci --help).
  for p in /usr/share/misc/pci.ids /usr/share/misc/pci.ids.gz; do [ -e "$p" ] && echo "$p"; done
  return 0
}

# podman_image: IMAGE=localhost/pcifs-test:HASH, importing it if missing.
podman_image() {
  local files hash root=$TMP/image-root f
  files=$(podman_image_files | sort -u)
  # The tag is the hash of every file's path and content and of this recipe:
  # a host whose tools change, or a changed recipe, gets a new image; an
  # unchanged one reuses the old.
  # shellcheck disable=SC2086 # one path per line, none with spaces
  hash=$( { echo "$files"; sha256sum $files; declare -f podman_image; } | sha256sum | cut -c1-16)
  IMAGE=localhost/pcifs-test:$hash
  "${PODMAN[@]}" image exists "$IMAGE" && return 0
  # Tests of several build directories may start at once on a new machine:
  # one imports, the others wait for it and then find the image.
  local lock
  exec {lock}>/run/lock/pcifs-test-image.lock
  flock -w 300 "$lock" || { echo "FAIL: the image lock was held for 300 s"; exit 1; }
  if "${PODMAN[@]}" image exists "$IMAGE"; then
    exec {lock}>&-
    return 0
  fi
  mkdir -p "$root"/{bin,etc,proc,sys,dev,tmp,root}
  for f in $files; do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f" # symlinks (/bin/sh -> dash) become the file itself
  done
  cp -L "$(command -v dash)" "$root/bin/sh"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' \
    >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  chmod 1777 "$root/tmp"
  tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$TMP/image.tar" . \
    || { echo "FAIL: could not pack the image"; exit 1; }
  local out
  out=$("${PODMAN[@]}" import "$TMP/image.tar" "$IMAGE" 2>&1) \
    || { echo "FAIL: podman import: $out"; exit 1; }
  rm -rf "$root" "$TMP/image.tar"
  exec {lock}>&-
}

# podman_run ARGS...: `podman run` with this host's needs; ARGS are run's
# options, then the image and the command. Status 124: it ran past
# PODMAN_RUN_LIMIT seconds (a hang is a failure, never a stuck test).
PODMAN_RUN_LIMIT=120
PODMAN_RUN=(run --rm --network=none --ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
podman_run() {
  PODMAN_N=$((PODMAN_N + 1))
  timeout --kill-after=10 "$PODMAN_RUN_LIMIT" \
    "${PODMAN[@]}" "${PODMAN_RUN[@]}" --name "$PODMAN_TAG-$PODMAN_N" "$@"
}

# podman_cleanup: every container of this run, whatever state it was left in.
podman_cleanup() {
  [ -n "$PODMAN_TAG" ] || return 0
  local ids
  ids=$("${PODMAN[@]}" ps -a --filter "name=^$PODMAN_TAG-" --format '{{.ID}}' 2>/dev/null)
  # shellcheck disable=SC2086 # one id per word
  [ -z "$ids" ] || "${PODMAN[@]}" rm -f $ids >/dev/null 2>&1
  return 0
}

# step LABEL CMD...: runs CMD (a podman call), logging what it printed.
# STEP_OUT, STEP_ERR and STEP_RC hold its stdout, its stderr (podman's own
# errors, and the container's stderr) and its status. Kept apart: lspci's
# unbuffered warnings would land mid-line in its buffered output. A test may
# define `cmdline CMD...` to show CMD as it really runs.
step() {
  local label=$1
  shift
  echo "---- $label"
  if declare -F cmdline >/dev/null; then
    echo "\$ $(cmdline "$@")"
  else
    echo "\$ ${PODMAN[*]} ${PODMAN_RUN[*]} ${*:2}"
  fi
  STEP_OUT=$("$@" 2>"$TMP/step.err")
  STEP_RC=$?
  STEP_ERR=$(cat "$TMP/step.err")
  echo "exit status $STEP_RC"
  if [ "${#STEP_OUT}" -gt 3000 ]; then
    echo "${STEP_OUT:0:3000}"
    echo "[... $((${#STEP_OUT} - 3000)) more characters]"
  else
    [ -z "$STEP_OUT" ] || echo "$STEP_OUT"
  fi
  [ -z "$STEP_ERR" ] || echo "stderr: $STEP_ERR"
}
