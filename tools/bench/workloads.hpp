// What pcifs-bench measures: one function per figure, each timing one round
// against one mount and returning the round's value in the figure's unit.
// Every operation's result is checked (length, content, errno) and a failure
// throws std::runtime_error: a figure is only printed for work that was done
// right. Untimed sanity observations (how the kernel split a bulk read,
// whether mmap found the page cache empty) go to Observations.
//
// A Target owns the open files of one mount for the whole run (for pcifs, the
// open BAR files are the bench process's claim on the device). Not
// thread-safe except where a function starts its own threads.
#pragma once

#include <cstdint>
#include <string>

namespace pcifs::bench {

// How much work one round does; --quick shrinks it.
struct Sizes {
  unsigned config_ops = 2000;
  unsigned config_qd32_ops = 4000;
  unsigned bar_ops = 2000;
  unsigned bulk_reads = 16;
  unsigned mmap_maps = 2;
  unsigned doe_ops = 1000;         // per round, one client
  unsigned doe8_ops = 250;         // per client per round, 8 clients
  unsigned quiesce_mappings = 64;  // the figure
  unsigned reader_ops = 4000;      // per reader process per round (config_readers_ops)
};

// Kept across rounds; printed once.
struct Observations {
  uint64_t bulk_fuse_reads = 0;         // FUSE_READs the floor saw for bulk reads
  uint64_t bulk_preads = 0;             // 1 MiB preads issued against the floor
  uint64_t bulk_max_request = 0;        // largest FUSE_READ the floor saw (bytes)
  uint64_t mmap_resident_at_map = 0;    // pages already cached right after mmap (want 0)
  uint64_t mmap_not_faulted = 0;        // pages not cached after the touch (want 0)
  uint64_t quiesce_resident_after = 0;  // pages still cached after the quiesce (want 0)
  bool iowq_workers_raised = true;      // io_uring ran 32 workers per ring
  // How many times each check above ran: a check that never ran says nothing.
  uint64_t mmap_maps_checked = 0;
  uint64_t quiesces_checked = 0;
  uint64_t rings_checked = 0;
};

class Target {
 public:
  // `device_dir` ends in '/'; `stats_path` is the floor's .floor_stats or "".
  Target(std::string name, std::string device_dir, std::string stats_path);
  ~Target();
  Target(const Target&) = delete;
  Target& operator=(const Target&) = delete;

  const std::string& name() const { return name_; }
  const std::string& dir() const { return dir_; }
  const std::string& stats_path() const { return stats_; }
  int config_fd() const { return config_fd_; }
  int bar0_fd() const { return bar0_fd_; }
  int bar2_fd() const { return bar2_fd_; }
  int power_fd() const { return power_fd_; }

 private:
  void close_all();
  std::string name_, dir_, stats_;
  int config_fd_ = -1, bar0_fd_ = -1, bar2_fd_ = -1, power_fd_ = -1;
};

double config_read_qd1_us(const Target& t, const Sizes& s, Observations& o);
double config_read_qd32_ops(const Target& t, const Sizes& s, Observations& o);
double bar_pread4_us(const Target& t, const Sizes& s, Observations& o);
double bar_pwrite4_us(const Target& t, const Sizes& s, Observations& o);
double bulk_read_mibs(const Target& t, const Sizes& s, Observations& o);
double mmap_fault_us_per_page(const Target& t, const Sizes& s, Observations& o);
double doe_1client_per_s(const Target& t, const Sizes& s, Observations& o);
double doe_8clients_per_s(const Target& t, const Sizes& s, Observations& o);
double quiesce_64_maps_ms(const Target& t, const Sizes& s, Observations& o);
// `readers` processes, each with its own open config, 4-byte preads of the
// power management control register (0x44, served by the device, not the
// shadow) in a loop, started together: the total operations per second.
double config_readers_ops(const Target& t, const Sizes& s, unsigned readers);
// The same for any file: `readers` processes, each with its own open `path`,
// `ops_per_reader` 4-byte preads at `offset`, started together; reads per
// second, all readers together. Throws (naming `what`) if any read fails.
double parallel_preads(const std::string& path, uint32_t offset, unsigned readers,
                       unsigned ops_per_reader, const std::string& what);
template <unsigned N>
double config_readers_n(const Target& t, const Sizes& s, Observations&) {
  return config_readers_ops(t, s, N);
}
template <unsigned N>
unsigned reader_ops_n(const Sizes& s) {
  return N * s.reader_ops;
}

}  // namespace pcifs::bench
