// Tenant hand-over [S11]: what a function is brought back to when a claim on
// its IOMMU group ends, and the worker thread that does it.
//
// When a claim ends (last claiming handle closed, the holder died, its view
// was removed, the daemon ends) the next holder must not inherit the previous
// one's device: Bus Master and MSI/MSI-X enabled, DMA descriptors programmed,
// BAR RAM written, a low-power state. DeviceControl::hand_over() quiesces and
// revokes mappings, brings the function to D0, resets it with the best method
// it has, and restores the clean baseline made here from the config image read
// at attach. Reset methods, best first:
//   kFlr   Function Level Reset: PCIe Device Capabilities advertises it (PCIe
//          6.0 §6.6.2: afterwards the function holds no software-readable
//          state of its previous use);
//   kPm    a D3hot -> D0 transition of a function whose PMCSR says
//          No_Soft_Reset = 0 (PCI PM 1.2 §5.6.1: it resets to D0uninitialized);
//   kNone  neither: only the baseline config is restored. Internal state, BAR
//          memory included, may survive: the README says so, and `status`
//          names the method of each device.
//
// HandoverWorker runs hand-overs off the FUSE threads, one at a time, in order
// (a sysfs reset can take about a minute; a FUSE worker must never wait for
// one). Thread-safe: every method. drain() waits for what was submitted before
// it; the destructor runs what is queued, then joins.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <span>
#include <string_view>
#include <thread>

#include "core/config_state.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::core {

enum class ResetMethod : uint8_t { kFlr, kPm, kNone };
std::string_view to_string(ResetMethod m);  // "flr", "pm", "none"

// The best reset method a function with this config image has (above).
ResetMethod reset_method_of(std::span<const uint8_t> image);

// The state a function is handed to its next user in: `attach_image` with Bus
// Master Enable, MSI Enable and MSI-X Enable cleared, and MSI-X Function Mask
// set (so no vector fires before its new owner unmasks it).
ConfigImage clean_baseline(std::span<const uint8_t> attach_image);

class HandoverWorker {
 public:
  using Job = std::function<void()>;
  HandoverWorker();
  ~HandoverWorker();
  HandoverWorker(const HandoverWorker&) = delete;
  HandoverWorker& operator=(const HandoverWorker&) = delete;

  // Queues `job`; it runs on the worker thread. A job must not throw (one that
  // does is logged and dropped: the worker goes on). After stop(): runs `job`
  // on the caller's thread.
  void submit(Job job) EXCLUDES(mu_);
  // Returns once every job submitted before the call has finished.
  void drain() EXCLUDES(mu_);
  // Jobs queued or running now.
  size_t pending() const EXCLUDES(mu_);

 private:
  void run() EXCLUDES(mu_);

  mutable Mutex mu_{"HandoverWorker::mu_"};
  CondVar cv_;
  std::deque<Job> queue_ GUARDED_BY(mu_);
  uint64_t submitted_ GUARDED_BY(mu_) = 0;
  uint64_t finished_ GUARDED_BY(mu_) = 0;
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace pcifs::core
