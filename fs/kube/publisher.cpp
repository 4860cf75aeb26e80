// ResourceSlice publishing (publisher.hpp).
#include "kube/publisher.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <set>

#include "kube/inventory.hpp"

namespace pcifs::kube {

using nlohmann::json;

Result<json> ApiSliceStore::list(std::string* error) {
  return api_.list_slices(kDriverName, node_, error);  // the list's items
}
Result<json> ApiSliceStore::create(const json& slice, std::string* error) {
  return api_.create_slice(slice, error);
}
Result<json> ApiSliceStore::replace(const json& slice, std::string* error) {
  return api_.replace_slice(slice, error);
}
Result<void> ApiSliceStore::remove(const std::string& name, std::string* error) {
  return api_.delete_slice(name, error);
}

namespace {

// What the scheduler sees of a device: its name and attributes (the API
// server may add defaults beside them).
json projection(const json& devices) {
  json out = json::array();
  for (const auto& d : devices) {
    out.push_back(
        json{{"name", d.value("name", "")}, {"attributes", d.value("attributes", json::object())}});
  }
  std::sort(out.begin(), out.end(),
            [](const json& a, const json& b) { return a["name"] < b["name"]; });
  return out;
}

// The stored pool is whole and current: one generation, the slice count it
// claims, and exactly the wanted devices.
bool current(const json& items, const json& want) {
  if (!items.is_array() || items.empty()) return false;
  for (const auto& s : items) {
    if (!s.is_object()) return false;
  }
  std::set<int64_t> generations;
  int64_t count = -1;
  json have = json::array();
  for (const auto& s : items) {
    const json pool = s.value("spec", json::object()).value("pool", json::object());
    generations.insert(pool.value("generation", int64_t{-1}));
    count = pool.value("resourceSliceCount", int64_t{-1});
    for (const auto& d : s.value("spec", json::object()).value("devices", json::array())) {
      have.push_back(d);
    }
  }
  return generations.size() == 1 && count == static_cast<int64_t>(items.size()) &&
         projection(have) == projection(want);
}

int64_t max_generation(const json& items) {
  int64_t g = 0;
  for (const auto& s : items) {
    g = std::max(g, s.value("spec", json::object())
                        .value("pool", json::object())
                        .value("generation", int64_t{0}));
  }
  return g;
}

}  // namespace

Publisher::Publisher(std::string node, HostDaemon& daemon, SliceStore& store,
                     std::chrono::milliseconds resync)
    : node_(std::move(node)), daemon_(daemon), store_(store), resync_(resync) {}

Result<bool> Publisher::sync(std::string* error) {
  auto answer = daemon_.call(json{{"verb", "devices"}}, error);
  if (!answer) return answer.error();
  auto functions = parse_host_devices(*answer, error);
  if (!functions) return functions.error();
  const auto devices = dra_devices(*functions);
  auto items = store_.list(error);
  if (!items) return items.error();
  json want = json::array();
  for (const auto& d : devices)
    want.push_back(json{{"name", d.name}, {"attributes", d.attributes}});
  if (current(*items, want)) {
    MutexLock lock(mu_);
    generation_ = max_generation(*items);
    return false;
  }
  const int64_t gen = max_generation(*items) + 1;
  const auto slices = resource_slices(node_, gen, devices);
  std::map<std::string, json> existing;
  for (const auto& s : *items) {
    existing[s.value("metadata", json::object()).value("name", "")] = s;
  }
  std::set<std::string> written;
  for (json s : slices) {
    const std::string name = s["metadata"]["name"];
    written.insert(name);
    auto it = existing.find(name);
    if (it != existing.end()) {
      s["metadata"]["resourceVersion"] =
          it->second.value("metadata", json::object()).value("resourceVersion", "");
      auto r = store_.replace(s, error);
      if (!r) return r.error();
    } else {
      auto r = store_.create(s, error);
      if (!r) return r.error();
    }
  }
  for (const auto& [name, s] : existing) {
    if (written.count(name)) continue;
    auto r = store_.remove(name, error);
    if (!r) return r.error();
  }
  size_t healthy = 0;
  for (const auto& d : devices) healthy += d.healthy ? 1 : 0;
  spdlog::info("published {} device(s) ({} healthy) in {} ResourceSlice(s), pool {} generation {}",
               devices.size(), healthy, slices.size(), node_, gen);
  MutexLock lock(mu_);
  generation_ = gen;
  ++syncs_;
  return true;
}

void Publisher::run() {
  auto backoff = std::chrono::milliseconds(1000);
  for (;;) {
    std::string error;
    Result<bool> r = Errno(EIO);
    try {  // whatever an API server or daemon sends, the agent keeps serving
      r = sync(&error);
    } catch (const std::exception& e) {
      error = std::string("internal error: ") + e.what();
    }
    std::chrono::milliseconds next = resync_;
    if (!r) {
      spdlog::warn("ResourceSlices not published: {} (again in {} ms)", error, backoff.count());
      next = backoff;
      backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
    } else {
      backoff = std::chrono::milliseconds(1000);
    }
    MutexLock lock(mu_);
    cv_.wait_for(mu_, next, [&]() REQUIRES(mu_) { return poked_ || stopping_; });
    if (stopping_) return;
    poked_ = false;
  }
}

void Publisher::poke() {
  MutexLock lock(mu_);
  poked_ = true;
  cv_.notify_all();
}

void Publisher::stop() {
  MutexLock lock(mu_);
  stopping_ = true;
  cv_.notify_all();
}

uint64_t Publisher::syncs() const {
  MutexLock lock(mu_);
  return syncs_;
}

int64_t Publisher::generation() const {
  MutexLock lock(mu_);
  return generation_;
}

}  // namespace pcifs::kube
