#include "fault/fault_backend.hpp"

#include <utility>

namespace pcifs::backend::fault {

namespace {

uint64_t bdf_key(const Bdf& b) {
  return (uint64_t{b.domain} << 16) | (uint64_t{b.bus} << 8) | (uint64_t{b.dev} << 3) | b.fn;
}

}  // namespace

FaultBackend::FaultBackend(std::shared_ptr<Backend> inner, uint64_t seed)
    : inner_(std::move(inner)), seed_(seed) {}

std::string FaultBackend::describe() const { return "fault(" + inner_->describe() + ")"; }

std::optional<std::string> FaultBackend::shared_root() const { return inner_->shared_root(); }

std::shared_ptr<FaultDevice> FaultBackend::wrap(const std::shared_ptr<Device>& d) {
  auto it = wrappers_.find(d.get());
  if (it != wrappers_.end()) return it->second;
  auto w =
      std::make_shared<FaultDevice>(d, seed_ ^ (bdf_key(d->info().bdf) * 0x9e3779b97f4a7c15ULL));
  wrappers_.emplace(d.get(), w);
  return w;
}

std::vector<std::shared_ptr<FaultDevice>> FaultBackend::wrap_all() {
  // Enumerate outside our lock: the inner backend may take its own locks, and
  // hot-plug may call back into whoever holds ours.
  auto present = inner_->devices();
  MutexLock lock(mu_);
  std::map<const Device*, std::shared_ptr<FaultDevice>> kept;
  std::vector<std::shared_ptr<FaultDevice>> out;
  out.reserve(present.size());
  for (const auto& d : present) {
    auto w = wrap(d);
    kept.emplace(d.get(), w);
    out.push_back(std::move(w));
  }
  wrappers_ = std::move(kept);  // forget the wrappers of departed devices
  return out;
}

std::vector<std::shared_ptr<Device>> FaultBackend::devices() {
  auto wrapped = wrap_all();
  return {wrapped.begin(), wrapped.end()};
}

std::shared_ptr<FaultDevice> FaultBackend::device(const Bdf& bdf) {
  for (auto& w : wrap_all())
    if (w->info().bdf == bdf) return w;
  return nullptr;
}

void FaultBackend::set_fault_all(OpClass c, const Fault& f) {
  for (auto& w : wrap_all()) w->set_fault(c, f);
}

void FaultBackend::set_hotplug_callback(HotplugFn fn) {
  inner_->set_hotplug_callback(std::move(fn));
}

void FaultBackend::config_read_batch(std::span<ConfigReadItem> items) {
  std::vector<ConfigReadItem> pass;
  std::vector<size_t> where;
  for (size_t i = 0; i < items.size(); ++i) {
    ConfigReadItem it = items[i];
    if (auto* fd = dynamic_cast<FaultDevice*>(it.device)) {
      auto r = fd->enter(OpClass::kConfigRead);
      if (!r) {
        items[i].result = r;
        continue;
      }
      it.device = fd->inner().get();
    }
    pass.push_back(it);
    where.push_back(i);
  }
  inner_->config_read_batch(pass);
  for (size_t k = 0; k < pass.size(); ++k) items[where[k]].result = pass[k].result;
}

}  // namespace pcifs::backend::fault
