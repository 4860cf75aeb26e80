// The Mediator's lease watcher is a thread: a pass that throws (here, a
// device whose config read throws while it arrives anew after a takeover)
// must be logged and retried, never end the daemon; the device that was left
// out is attached again by the next pass.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "fault/fault_backend.hpp"
#include "fixtures/mediator_fixture.hpp"

namespace pcifs::test {
namespace {

// The simulated set, presented as if other processes could reach it.
class SharedSim : public backend::Backend {
 public:
  SharedSim() : inner_(backend::sim::make_default_backend()) {}
  std::string describe() const override { return "shared " + inner_->describe(); }
  std::optional<std::string> shared_root() const override { return "/test/shared-sim"; }
  std::vector<std::shared_ptr<backend::Device>> devices() override { return inner_->devices(); }
  void set_hotplug_callback(backend::HotplugFn fn) override {
    inner_->set_hotplug_callback(std::move(fn));
  }

 private:
  std::shared_ptr<backend::sim::SimBackend> inner_;
};

MediatorOptions leased(const std::string& dir, const std::string& owner,
                       std::chrono::milliseconds retry) {
  MediatorOptions o;
  o.doe_timeout = std::chrono::milliseconds(100);
  HostLockOptions hl;
  hl.dir = dir;
  hl.owner = owner;
  hl.retry = retry;
  hl.serves = [](const backend::DeviceInfo&) { return true; };
  o.host_locks = std::move(hl);
  return o;
}

TEST(LeaseWatch, AThrowingTakeoverIsCaughtAndTheDeviceComesBack) {
  char tmpl[] = "/tmp/pcifs-leasewatch-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const auto fast = std::chrono::milliseconds(20);
  {
    auto first = std::make_unique<Mediator>(std::make_shared<SharedSim>(), leased(dir, "1", fast));
    first->add_view(ViewPolicy{});
    auto faulty = std::make_shared<backend::fault::FaultBackend>(std::make_shared<SharedSim>());
    Mediator second(faulty, leased(dir, "2", fast));
    second.add_view(ViewPolicy{});
    ASSERT_NE(second.status_json(0).find("read_only"), std::string::npos);

    // The next config read of 01:00.0 (its attach after the takeover) throws.
    std::atomic<bool> armed{true}, thrown{false};
    faulty->device(kEp0)->set_hook(backend::fault::OpClass::kConfigRead,
                                   [&](backend::fault::OpClass) {
                                     if (armed.exchange(false)) {
                                       thrown.store(true);
                                       throw std::runtime_error("injected");
                                     }
                                   });
    first.reset();  // its leases end: the watcher takes them over
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    auto done = [&] {
      const std::string s = second.status_json(0);
      return thrown.load() && s.find("read_only") == std::string::npos &&
             s.find(kEp0.str()) != std::string::npos;
    };
    while (!done() && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(fast);
    EXPECT_TRUE(thrown.load());
    ASSERT_TRUE(done()) << second.status_json(0);
    auto bar =
        second.open(0, kRoot, FileRef{kEp0, FileKind::kBar, 0, {}}, OpenFlags{true, true, false});
    EXPECT_TRUE(bar.ok()) << bar.error().name();
    if (bar) second.release(*bar);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace pcifs::test
