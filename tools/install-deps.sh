#!/usr/bin/env bash
# Installs, from Debian's archive, whatever pcifs needs to build, test and run
# that this machine lacks. Idempotent: a machine that has everything is left alone.
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config git
      libfuse3-dev fuse3 liburing-dev libspdlog-dev libfmt-dev
      libgtest-dev libgmock-dev libcli11-dev nlohmann-json3-dev
      pciutils clang clang-format clang-tidy libclang-rt-14-dev util-linux xxd
      podman runc
      python3-yaml # tests/tools/kube_manifests_test.sh parses tools/kubernetes/*.yaml
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
      libcurl4-openssl-dev libssl-dev libcpp-httplib-dev openssl)
# gRPC + protobuf: pcifs-kube serves the kubelet's plugin-registration and DRA
# services on unix sockets; libcurl: its HTTPS client of the API server;
# cpp-httplib + OpenSSL (libssl-dev, the openssl tool for test certificates):
# the tests' fake API server.
# podman + runc: tests/tools/podman_test.sh runs containers with CDI devices
# (as root, --network=none, storage driver overlay). apt pulls in what podman
# strictly needs (conmon, containers-common, containernetworking-plugins);
# the recommends (crun, netavark, slirp4netns, fuse-overlayfs, catatonit,
# uidmap) are for rootless or networked containers and stay out. runc, not
# crun: Debian 12's crun fails on hosts with hybrid cgroups.
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
