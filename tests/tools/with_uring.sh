#!/bin/sh
# with_uring.sh CMD [ARGS...]: runs CMD with the kernel's FUSE over io_uring
# switch on, and puts the switch back as it was however CMD ends. The daemon
# never flips it (README "Transports"); the tests that need it do, for their
# run only. Exit 77 (CTest: skipped) on a kernel without the switch.
p=/sys/module/fuse/parameters/enable_uring
if [ ! -w "$p" ]; then
  echo "SKIP: $p missing or not writable (FUSE over io_uring needs Linux 6.14+ and root)"
  exit 77
fi
old=$(cat "$p")
trap 'echo "$old" > "$p"' EXIT
trap 'exit 130' INT TERM
echo Y > "$p"
"$@"
