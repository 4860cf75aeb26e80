// The uevent reader thread is a noexcept boundary: a handler that throws is
// counted and logged, the receiver is told to rescan, and the next event is
// still delivered -- the daemon is not terminated.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

#include "sysfs/uevent.hpp"

namespace pcifs::backend::sysfs {
namespace {

std::string pci(const std::string& action, const std::string& slot) {
  const std::string devpath = "/devices/pci0000:00/" + slot;
  std::string d = action + "@" + devpath;
  d += '\0';
  for (const std::string& f : {"ACTION=" + action, "DEVPATH=" + devpath,
                               std::string("SUBSYSTEM=pci"), "PCI_SLOT_NAME=" + slot}) {
    d += f;
    d += '\0';
  }
  return d;
}

// Bounded wait on a condition (the reader runs on its own thread).
template <typename F>
bool eventually(F done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

TEST(UeventThrow, ThrowingHandlersAreCaughtAndTheReaderGoesOn) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
  const int on = 1;
  ASSERT_EQ(setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &on, sizeof on), 0);
  UeventSource src;
  src.fd.reset(sv[0]);
  src.sender = UeventSender::kLocal;
  src.name = "socketpair";
  UniqueFd peer(sv[1]);
  UeventMonitor mon(std::move(src));

  std::atomic<int> events{0}, lost{0}, timers{0};
  ASSERT_TRUE(mon.start(
      [&](const PciEvent&) {
        if (events.fetch_add(1) == 0) throw std::runtime_error("first event fails");
      },
      [&] {
        if (lost.fetch_add(1) == 0) throw std::bad_alloc();  // the rescan fails once too
      },
      {},
      [&]() -> std::optional<std::chrono::milliseconds> {
        if (timers.fetch_add(1) == 0) throw 42;  // not even a std::exception
        return std::nullopt;
      }));
  auto send = [&](const std::string& d) {
    ASSERT_EQ(::send(peer.get(), d.data(), d.size(), 0), static_cast<ssize_t>(d.size()));
  };
  send(pci("add", "0000:05:00.0"));
  ASSERT_TRUE(eventually([&] { return events.load() >= 1 && timers.load() >= 1; }));
  send(pci("remove", "0000:05:00.0"));
  ASSERT_TRUE(eventually([&] { return events.load() >= 2 && timers.load() >= 2; }));
  auto st = mon.stats();
  EXPECT_TRUE(st.running);
  EXPECT_EQ(st.delivered, 2u);
  EXPECT_EQ(lost.load(), 1);  // the failed event asked for a rescan (which failed, and was caught)
  EXPECT_EQ(st.handler_errors, 3u);  // event, rescan, timer
  mon.stop();
}

}  // namespace
}  // namespace pcifs::backend::sysfs
