#include "core/claims.hpp"

namespace pcifs::core {

std::string to_string(const ClaimHolder& holder) {
  return std::string(holder.handing_over ? "hand-over after " : "") +
         "pid=" + std::to_string(holder.pid) + " uid=" + std::to_string(holder.uid) +
         " view=" + holder.view;
}

std::string ClaimTable::group_key(const backend::DeviceInfo& info) {
  if (info.iommu_group) return "group:" + std::to_string(*info.iommu_group);
  return "device:" + info.bdf.str();
}

Result<void> ClaimTable::acquire(const std::string& group, const Caller& caller,
                                 std::string_view view, ClaimHolder* holder) {
  MutexLock lock(mu_);
  auto [it, fresh] = claims_.try_emplace(group);
  ClaimHolder& h = it->second;
  if (fresh) {
    h.pid = caller.pid;
    h.uid = caller.uid;
    h.view = std::string(view);
  } else if (h.handing_over || h.pid != caller.pid) {
    if (holder != nullptr) *holder = h;
    return Errno(h.handing_over ? EAGAIN : EBUSY);
  }
  ++h.handles;
  if (holder != nullptr) *holder = h;
  return Ok();
}

bool ClaimTable::release(const std::string& group, pid_t pid, bool hand_over) {
  MutexLock lock(mu_);
  auto it = claims_.find(group);
  if (it == claims_.end() || it->second.handing_over || it->second.pid != pid) return false;
  if (--it->second.handles > 0) return false;
  if (hand_over) {
    it->second.handing_over = true;
  } else {
    claims_.erase(it);
  }
  return true;
}

void ClaimTable::handed_over(const std::string& group) {
  {
    MutexLock lock(mu_);
    auto it = claims_.find(group);
    if (it != claims_.end() && it->second.handing_over) claims_.erase(it);
  }
  handed_over_cv_.notify_all();
}

bool ClaimTable::wait_handed_over(const std::string& group,
                                  std::chrono::steady_clock::time_point deadline) {
  MutexLock lock(mu_);
  auto settled = [&]() REQUIRES(mu_) {
    auto it = claims_.find(group);
    return it == claims_.end() || !it->second.handing_over || it->second.handover_failed;
  };
  handed_over_cv_.wait_until(mu_, deadline, [&]() NO_THREAD_SAFETY_ANALYSIS { return settled(); });
  auto it = claims_.find(group);
  return it == claims_.end() || !it->second.handing_over;
}

void ClaimTable::handover_failed(const std::string& group) {
  {
    MutexLock lock(mu_);
    auto it = claims_.find(group);
    if (it != claims_.end() && it->second.handing_over) it->second.handover_failed = true;
  }
  handed_over_cv_.notify_all();
}

bool ClaimTable::retry_handover(const std::string& group) {
  MutexLock lock(mu_);
  auto it = claims_.find(group);
  if (it == claims_.end() || !it->second.handover_failed) return false;
  it->second.handover_failed = false;
  return true;
}

bool ClaimTable::handing_over(const std::string& group) const {
  MutexLock lock(mu_);
  auto it = claims_.find(group);
  return it != claims_.end() && it->second.handing_over;
}

std::optional<ClaimHolder> ClaimTable::revoke(const std::string& group) {
  MutexLock lock(mu_);
  auto it = claims_.find(group);
  if (it == claims_.end()) return std::nullopt;
  ClaimHolder h = std::move(it->second);
  claims_.erase(it);
  return h;
}

std::optional<ClaimHolder> ClaimTable::holder(const std::string& group) const {
  MutexLock lock(mu_);
  auto it = claims_.find(group);
  if (it == claims_.end()) return std::nullopt;
  return it->second;
}

bool ClaimTable::held_by(const std::string& group, pid_t pid) const {
  MutexLock lock(mu_);
  auto it = claims_.find(group);
  return it != claims_.end() && !it->second.handing_over && it->second.pid == pid;
}

std::string ClaimTable::owner_text(const std::string& group) const {
  auto h = holder(group);
  return h ? to_string(*h) : "none";
}

}  // namespace pcifs::core
