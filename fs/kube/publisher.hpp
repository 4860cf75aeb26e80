// Publishes the node's devices as ResourceSlices and keeps them current.
//
// sync() reads the host daemon's inventory, turns it into DRA devices
// (inventory.hpp) and, when they differ from what the API server holds for
// this driver and node, writes the pool again with its generation bumped:
// each slice replaced (PUT, with the resourceVersion read) or created, and
// slices beyond the new count deleted. What the API server holds is read
// before every write, so a slice someone else changed or deleted, or a
// restarted agent, converge to the same state.
//
// run() calls sync() at start, then whenever poke() says something changed
// (the agent's watcher pokes on the host daemon's device_arrived, device_left
// and health events), and at least every `resync` (a missed event, an edited
// slice). A failed sync is retried with a backoff of 1 s doubling to 30 s.
// All waits are on a condition variable: stop() ends run() at once.
//
// Thread safety: poke() and stop() from any thread; run() on one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "kube/api_client.hpp"
#include "kube/driver.hpp"
#include "pcifs/result.hpp"
#include "pcifs/sync.hpp"

namespace pcifs::kube {

// The ResourceSlice side of the API server (ApiClient implements it).
class SliceStore {
 public:
  virtual ~SliceStore() = default;
  virtual Result<nlohmann::json> list(std::string* error) = 0;  // items of this driver and node
  virtual Result<nlohmann::json> create(const nlohmann::json& slice, std::string* error) = 0;
  virtual Result<nlohmann::json> replace(const nlohmann::json& slice, std::string* error) = 0;
  virtual Result<void> remove(const std::string& name, std::string* error) = 0;
};

class ApiSliceStore : public SliceStore {
 public:
  ApiSliceStore(const ApiClient& api, std::string node) : api_(api), node_(std::move(node)) {}
  Result<nlohmann::json> list(std::string* error) override;
  Result<nlohmann::json> create(const nlohmann::json& slice, std::string* error) override;
  Result<nlohmann::json> replace(const nlohmann::json& slice, std::string* error) override;
  Result<void> remove(const std::string& name, std::string* error) override;

 private:
  const ApiClient& api_;
  std::string node_;
};

class Publisher {
 public:
  Publisher(std::string node, HostDaemon& daemon, SliceStore& store,
            std::chrono::milliseconds resync = std::chrono::seconds(60));

  // One pass: true when slices were written, false when they were current.
  Result<bool> sync(std::string* error);

  void run();
  void poke();
  void stop();

  uint64_t syncs() const;      // passes that wrote slices
  int64_t generation() const;  // the pool generation last written (0: none)

 private:
  const std::string node_;
  HostDaemon& daemon_;
  SliceStore& store_;
  const std::chrono::milliseconds resync_;
  mutable Mutex mu_{"Publisher::mu_"};
  CondVar cv_;
  bool poked_ GUARDED_BY(mu_) = false;
  bool stopping_ GUARDED_BY(mu_) = false;
  uint64_t syncs_ GUARDED_BY(mu_) = 0;
  int64_t generation_ GUARDED_BY(mu_) = 0;
};

}  // namespace pcifs::kube
