#include "sim/sim_backend.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "sim/config_model.hpp"
#include "sim/device_set.hpp"
#include "sim/rom_image.hpp"

namespace pcifs::backend::sim {

SimBackend::SimBackend(std::string description, std::vector<std::shared_ptr<SimDevice>> devices)
    : description_(std::move(description)), registry_(std::make_shared<Registry>()) {
  std::weak_ptr<Registry> weak = registry_;
  MutexLock l(registry_->mu);
  for (auto& d : devices) {
    d->set_remove_hook([weak](const Bdf& bdf) { on_removed(weak, bdf); });
    registry_->devices.emplace(d->info().bdf, std::move(d));
  }
}

std::string SimBackend::describe() const { return description_; }

std::vector<std::shared_ptr<Device>> SimBackend::devices() {
  MutexLock l(registry_->mu);
  std::vector<std::shared_ptr<Device>> out;
  out.reserve(registry_->devices.size());
  for (const auto& [bdf, d] : registry_->devices) out.push_back(d);  // std::map: sorted
  return out;
}

void SimBackend::set_hotplug_callback(HotplugFn fn) {
  MutexLock l(registry_->mu);
  registry_->hotplug = std::move(fn);
}

std::shared_ptr<SimDevice> SimBackend::find(const Bdf& bdf) const {
  MutexLock l(registry_->mu);
  auto it = registry_->devices.find(bdf);
  return it == registry_->devices.end() ? nullptr : it->second;
}

void SimBackend::on_removed(const std::weak_ptr<Registry>& weak, const Bdf& bdf) {
  auto reg = weak.lock();
  if (!reg) return;
  HotplugFn fn;
  {
    MutexLock l(reg->mu);
    reg->devices.erase(bdf);
    fn = reg->hotplug;
  }
  if (fn) fn(bdf, false);  // never with a backend lock held
}

namespace {

bool same_model(const ConfigModel& a, const ConfigModel& b) {
  return a.hw_default == b.hw_default && a.wmask == b.wmask && a.w1cmask == b.w1cmask &&
         a.caps.doe == b.caps.doe;
}

}  // namespace

std::vector<std::shared_ptr<SimDevice>> build_devices(const std::vector<DeviceSpec>& specs) {
  std::vector<std::shared_ptr<SimDevice>> out;
  out.reserve(specs.size());
  std::shared_ptr<const ConfigModel> last_model;
  std::shared_ptr<const std::vector<uint8_t>> last_rom;
  for (const DeviceSpec& s : specs) {
    auto model = build_config_model(s);
    if (last_model && same_model(*model, *last_model)) model = last_model;  // share
    auto rom = build_rom(s);
    if (last_rom && *rom == *last_rom) rom = last_rom;
    out.push_back(std::make_shared<SimDevice>(s, model, rom));
    last_model = std::move(model);
    last_rom = std::move(rom);
  }
  return out;
}

Result<std::unique_ptr<SimBackend>> load_backend_json(std::string_view text, std::string* error) {
  auto specs = parse_device_set(text, error);
  if (!specs) return specs.error();
  return std::make_unique<SimBackend>("sim (inline JSON)", build_devices(*specs));
}

Result<std::unique_ptr<SimBackend>> load_backend_file(const std::string& path, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int err = errno != 0 ? errno : ENOENT;
    if (error) *error = path + ": " + std::strerror(err);
    return Errno(err);
  }
  std::ostringstream text;
  text << in.rdbuf();
  std::string why;
  auto specs = parse_device_set(text.str(), &why);
  if (!specs) {
    if (error) *error = path + ": " + why;
    return specs.error();
  }
  return std::make_unique<SimBackend>("sim:" + path, build_devices(*specs));
}

std::unique_ptr<SimBackend> make_default_backend() {
  std::string error;
  auto specs = parse_device_set(default_set_json(), &error);
  assert(specs.ok() && "the embedded default set is valid (tested)");
  if (!specs)
    return std::make_unique<SimBackend>("sim (embedded default)",
                                        std::vector<std::shared_ptr<SimDevice>>{});
  return std::make_unique<SimBackend>("sim (embedded default)", build_devices(*specs));
}

}  // namespace pcifs::backend::sim
