// `watch` (fs/control/watch_queue.hpp, server.hpp): events reach every
// watcher in order; a watcher that does not read loses events, is told how
// many, and never holds up publish(); a watcher that leaves is cleaned up.
#include <gtest/gtest.h>

#include <thread>

#include "control/watch_queue.hpp"
#include "unit/control/control_test_util.hpp"

namespace pcifs::control::test {
namespace {

std::shared_ptr<const std::string> ev(int seq) {
  return std::make_shared<const std::string>(to_line(json{{"event", "e"}, {"seq", seq}}));
}

std::vector<json> take_all(WatchQueue& q) {
  std::string out;
  while (q.take(&out, 1 << 20)) {
  }
  std::vector<json> events;
  LineReader r;
  r.feed(out);
  std::string line;
  while (r.next(&line) == LineReader::Next::kLine) events.push_back(json::parse(line));
  return events;
}

TEST(WatchQueueTest, KeepsOrderWithinCapacity) {
  WatchQueue q(4);
  for (int i = 0; i < 4; ++i) q.push(ev(i));
  const auto got = take_all(q);
  ASSERT_EQ(got.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(got[static_cast<size_t>(i)]["seq"], i);
  EXPECT_EQ(q.dropped_total(), 0u);
}

// The marker sits where the gap is: after the events that fit, before the
// next one that did.
TEST(WatchQueueTest, TheOverflowMarkerStandsInTheGap) {
  WatchQueue q(2);
  for (int i = 0; i < 5; ++i) q.push(ev(i));  // 2, 3, 4 dropped
  std::string out;
  ASSERT_TRUE(q.take(&out, 1));  // the reader takes one line: room again
  q.push(ev(5));
  auto got = take_all(q);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0]["seq"], 1);
  EXPECT_EQ(got[1], (json{{"event", "overflow"}, {"dropped", 3}}));
  EXPECT_EQ(got[2]["seq"], 5);
  EXPECT_EQ(q.dropped_total(), 3u);
}

TEST(WatchQueueTest, TheMarkerComesWhenTheReaderCatchesUp) {
  WatchQueue q(1);
  q.push(ev(0));
  q.push(ev(1));
  auto got = take_all(q);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1], (json{{"event", "overflow"}, {"dropped", 1}}));
  std::string out;
  EXPECT_FALSE(q.take(&out, 1 << 20)) << "a marker is sent once";
}

class WatchTest : public ::testing::Test {
 protected:
  std::string path() const { return dir_.sub("control.sock"); }
  void watch(RawConn& c) {
    ASSERT_TRUE(c.ok());
    ASSERT_EQ(c.request({{"verb", "watch"}}), (json{{"ok", true}, {"watching", true}}));
  }

  TempDir dir_;
  FakeHandler h_;
};

TEST_F(WatchTest, EventsReachTwoWatchersInOrder) {
  auto s = start_server(path(), h_);
  RawConn a(path()), b(path());
  watch(a);
  watch(b);
  EXPECT_EQ(s->watchers(), 2u);
  constexpr int kEvents = 200;
  for (int i = 0; i < kEvents; ++i) s->publish({{"event", "device"}, {"seq", i}});
  for (RawConn* c : {&a, &b}) {
    for (int i = 0; i < kEvents; ++i) {
      json e = c->read_json();
      ASSERT_EQ(e["seq"], i) << e;
      EXPECT_EQ(e["event"], "device");
    }
  }
}

// A watcher that stops reading: publish() keeps returning while its socket
// and queue are full; when it reads again it learns how much it lost, and
// every event is either received, in order, or counted.
TEST_F(WatchTest, AWatcherThatDoesNotReadNeverBlocksPublish) {
  ServerOptions o = test_options();
  o.watch_queue = 8;
  auto s = start_server(path(), h_, o);
  RawConn deaf(path()), other(path());
  watch(deaf);
  const std::string payload(64 * 1024, 'p');
  constexpr int kEvents = 400;  // 25 MiB: far more than a socket buffer and the queue
  for (int i = 0; i < kEvents; ++i) s->publish({{"event", "big"}, {"seq", i}, {"data", payload}});
  EXPECT_EQ(other.request({{"verb", "ping"}})["ok"], true) << "others are still served";
  int received = 0, dropped = 0, last = -1;
  bool marker = false;
  while (received + dropped < kEvents) {
    json e = deaf.read_json();
    ASSERT_FALSE(e.contains("eof")) << received << " + " << dropped;
    if (e["event"] == "overflow") {
      marker = true;
      dropped += e["dropped"].get<int>();
      continue;
    }
    ASSERT_GT(e["seq"].get<int>(), last);
    last = e["seq"].get<int>();
    ++received;
  }
  EXPECT_TRUE(marker);
  EXPECT_EQ(received + dropped, kEvents);
  s->publish({{"event", "after"}});
  EXPECT_EQ(deaf.read_json()["event"], "after") << "the watcher caught up";
}

TEST_F(WatchTest, AWatcherThatLeavesIsCleanedUp) {
  auto s = start_server(path(), h_);
  RawConn a(path()), b(path());
  watch(a);
  watch(b);
  a.close();
  EXPECT_TRUE(s->wait_for_watchers(1, kDeadline));
  // b leaves with unread events that no longer fit its socket.
  const std::string payload(64 * 1024, 'p');
  for (int i = 0; i < 64; ++i) s->publish({{"event", "big"}, {"data", payload}});
  b.close();
  EXPECT_TRUE(s->wait_for_watchers(0, kDeadline));
  EXPECT_TRUE(s->wait_for_connections(0, kDeadline));
  s->publish({{"event", "nobody"}});
}

TEST_F(WatchTest, ConcurrentPublishersKeepEachPublishersOrder) {
  auto s = start_server(path(), h_);
  RawConn w(path());
  watch(w);
  constexpr int kPerThread = 300;
  std::vector<std::thread> publishers;
  for (int t = 0; t < 3; ++t) {
    publishers.emplace_back([&s, t] {
      for (int i = 0; i < kPerThread; ++i) s->publish({{"event", "e"}, {"t", t}, {"seq", i}});
    });
  }
  for (auto& p : publishers) p.join();
  int next[3] = {0, 0, 0};
  for (int n = 0; n < 3 * kPerThread; ++n) {
    json e = w.read_json();
    ASSERT_TRUE(e.contains("t")) << e;
    const int t = e["t"].get<int>();
    ASSERT_EQ(e["seq"], next[t]++);
  }
}

}  // namespace
}  // namespace pcifs::control::test
