#include "core/handover.hpp"

#include <linux/pci_regs.h>
#include <spdlog/spdlog.h>

#include <exception>

#include "core/cap_walk.hpp"

namespace pcifs::core {

namespace {

void put(ConfigImage& image, uint32_t offset, unsigned width, uint32_t value) {
  if (offset + width > image.size()) return;
  for (unsigned i = 0; i < width; ++i) image[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

}  // namespace

std::string_view to_string(ResetMethod m) {
  switch (m) {
    case ResetMethod::kFlr: return "flr";
    case ResetMethod::kPm: return "pm";
    case ResetMethod::kNone: return "none";
  }
  return "none";
}

ResetMethod reset_method_of(std::span<const uint8_t> image) {
  if (auto exp = find_capability(image, PCI_CAP_ID_EXP, false)) {
    if (cfg_read(image, exp->offset + PCI_EXP_DEVCAP, 4) & PCI_EXP_DEVCAP_FLR) {
      return ResetMethod::kFlr;
    }
  }
  if (auto pm = find_capability(image, PCI_CAP_ID_PM, false)) {
    if ((cfg_read(image, pm->offset + PCI_PM_CTRL, 2) & PCI_PM_CTRL_NO_SOFT_RESET) == 0) {
      return ResetMethod::kPm;
    }
  }
  return ResetMethod::kNone;
}

ConfigImage clean_baseline(std::span<const uint8_t> attach_image) {
  ConfigImage out(attach_image.begin(), attach_image.end());
  if (out.size() < PCI_COMMAND + 2) return out;
  put(out, PCI_COMMAND, 2, cfg_read(out, PCI_COMMAND, 2) & ~uint32_t{PCI_COMMAND_MASTER});
  if (auto msi = find_capability(out, PCI_CAP_ID_MSI, false)) {
    uint32_t flags = cfg_read(out, msi->offset + PCI_MSI_FLAGS, 2);
    put(out, msi->offset + PCI_MSI_FLAGS, 2, flags & ~uint32_t{PCI_MSI_FLAGS_ENABLE});
  }
  if (auto msix = find_capability(out, PCI_CAP_ID_MSIX, false)) {
    uint32_t flags = cfg_read(out, msix->offset + PCI_MSIX_FLAGS, 2);
    put(out, msix->offset + PCI_MSIX_FLAGS, 2,
        (flags & ~uint32_t{PCI_MSIX_FLAGS_ENABLE}) | PCI_MSIX_FLAGS_MASKALL);
  }
  return out;
}

HandoverWorker::HandoverWorker() : thread_([this] { run(); }) {}

HandoverWorker::~HandoverWorker() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void HandoverWorker::submit(Job job) {
  {
    MutexLock lock(mu_);
    if (!stop_) {
      queue_.push_back(std::move(job));
      ++submitted_;
      cv_.notify_all();
      return;
    }
  }
  job();
}

void HandoverWorker::drain() {
  MutexLock lock(mu_);
  const uint64_t target = submitted_;
  cv_.wait(mu_, [&]() NO_THREAD_SAFETY_ANALYSIS { return finished_ >= target; });
}

size_t HandoverWorker::pending() const {
  MutexLock lock(mu_);
  return static_cast<size_t>(submitted_ - finished_);
}

void HandoverWorker::run() {
  for (;;) {
    Job job;
    {
      MutexLock lock(mu_);
      cv_.wait(mu_, [&]() NO_THREAD_SAFETY_ANALYSIS { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued has run
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    try {
      job();
    } catch (const std::exception& e) {
      spdlog::error("hand-over: a job failed: {}", e.what());
    } catch (...) {
      spdlog::error("hand-over: a job failed");
    }
    {
      MutexLock lock(mu_);
      ++finished_;
    }
    cv_.notify_all();
  }
}

}  // namespace pcifs::core
