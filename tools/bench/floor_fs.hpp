// The benchmark's floor: a minimal libfuse3 filesystem that serves the same
// paths pcifs-bench measures (devices/0000:01:00.0/{config, resource0,
// resource2, doe, power_state}) from plain memory, with no mediation. It runs
// the same Session (loop, threads, INIT patch) and configure_connection() as
// the pcifs daemon and sets the same per-file open flags (direct_io, doe
// nonseekable), so the difference between the two is what pcifs adds.
//
// It also serves `.floor_stats` at the root, not a path any figure times: a
// text line "resource0_reads N resource0_max_read B" that tells the bench how
// the kernel split its 1 MiB reads into FUSE_READ requests.
//
// run_floor() is meant for a child process forked before the parent has
// threads: it mounts, serves until SIGTERM/SIGINT/SIGHUP or an unmount, then
// unmounts and returns the exit status. `with_poll` installs a poll handler
// like pcifs's; without it the kernel answers every poll itself (no_poll),
// which is what a bare filesystem gets and pcifs, serving doe, cannot.
#pragma once

#include <string>

namespace pcifs::bench {

inline constexpr const char* kFloorFsName = "pcifs-floor";

int run_floor(const std::string& mountpoint, bool with_poll);

}  // namespace pcifs::bench
