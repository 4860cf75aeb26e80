// The benchmark's floor: a minimal libfuse3 filesystem that serves the same
// paths pcifs-bench measures (devices/0000:01:00.0/{config, resource0,
// resource2, doe, power_state}) from plain memory, with no mediation. It runs
// the same Session (loop, threads, INIT patch) and configure_connection() as
// the pcifs daemon and sets the same per-file open flags (direct_io, doe
// nonseekable), so the difference between the two is what pcifs adds.
//
// It also serves `.floor_stats` at the root, not a path any figure times: a
// text line "resource0_reads N resource0_max_read B transport T uring_requests
// U" that tells the bench how the kernel split its 1 MiB reads into FUSE_READ
// requests, which transport the floor serves (T: "io_uring" or "/dev/fuse",
// pcifs::fuse::Session::transport()) and how many requests came over io_uring.
//
// run_floor() is meant for a child process forked before the parent has
// threads: it mounts, serves until SIGTERM/SIGINT/SIGHUP or an unmount, then
// unmounts and returns the exit status. `with_poll` installs a poll handler
// like pcifs's; without it the kernel answers every poll itself (no_poll),
// which is what a bare filesystem gets and pcifs, serving doe, cannot.
// `uring`: serve over FUSE over io_uring (Session transport kUring, started
// before any request is served) and fail, exit status 1, when the kernel does
// not give it; otherwise /dev/fuse.
#pragma once

#include <string>

namespace pcifs::bench {

inline constexpr const char* kFloorFsName = "pcifs-floor";

int run_floor(const std::string& mountpoint, bool with_poll, bool uring);

}  // namespace pcifs::bench
