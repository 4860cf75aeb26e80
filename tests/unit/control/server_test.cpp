// The control socket server (fs/control/server.hpp) over real sockets in a
// temporary directory, with a fake Handler [S16]: requests reach the handler,
// bad input is answered and survived, limits hold, the socket file is made
// and replaced with care, and stopping is prompt.
#include "control/server.hpp"

#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <future>
#include <thread>

#include "control/client.hpp"
#include "fixtures/lock_wait.hpp"
#include "pcifs/sync.hpp"
#include "unit/control/control_test_util.hpp"

namespace pcifs::control::test {
namespace {

class ServerTest : public ::testing::Test {
 protected:
  std::string path() const { return dir_.sub("run/control.sock"); }
  std::unique_ptr<Server> start(ServerOptions o = test_options()) {
    return start_server(path(), h_, o);
  }

  TempDir dir_;
  FakeHandler h_;
};

TEST_F(ServerTest, AddRmLsReachTheHandlerAndTheirAnswersComeBack) {
  auto s = start();
  RawConn c(path());
  ASSERT_TRUE(c.ok());
  json add = c.request({{"verb", "add"}, {"source", "c1.json"}, {"view", {{"uid", 7}}}});
  EXPECT_EQ(add["view"]["name"], "c1");
  h_.set_rm({{"ok", true}, {"note", "no view named zz"}});
  EXPECT_EQ(c.request({{"verb", "rm"}, {"name", "zz"}})["note"], "no view named zz");
  h_.set_ls({{"ok", true}, {"views", {{{"name", "c1"}}}}});
  EXPECT_EQ(c.request({{"verb", "ls"}})["views"][0]["name"], "c1");
  EXPECT_EQ(h_.calls(), (std::vector<std::string>{"add c1.json {\"uid\":7}", "rm zz", "ls"}));
}

TEST_F(ServerTest, PingAnswersPidAndVersion) {
  auto s = start();
  RawConn c(path());
  json r = c.request({{"verb", "ping"}});
  EXPECT_EQ(r["ok"], true);
  EXPECT_EQ(r["pid"], ::getpid());
  EXPECT_EQ(r["version"], "test");
  EXPECT_TRUE(h_.calls().empty());
}

// `locks` answers this process's lock contention (include/pcifs/sync.hpp),
// without the handler: a lock made to wait here is in the answer, a lock that
// never waited is not (the negative control).
TEST_F(ServerTest, LocksAnswersTheProcesssLockContention) {
  auto s = start();
  RawConn c(path());
  Mutex waited("test::server_waited");
  Mutex idle("test::server_idle");
  { MutexLock lock(idle); }
  waited.lock();
  std::thread waiter([&] { MutexLock lock(waited); });
  const auto entry = [&](const std::string& name) {
    json r = c.request({{"verb", "locks"}});
    EXPECT_EQ(r["ok"], true) << r;
    EXPECT_EQ(r["counted"], kLockContentionCounted);
    for (const auto& l : r["locks"]) {
      if (l["name"] == name) return l;
    }
    return json();
  };
  // The waiter counts itself before it blocks; it is let go and joined
  // before anything is asserted.
  const bool seen = kLockContentionCounted && pcifs::test::wait_contended("test::server_waited", 1);
  waited.unlock();
  waiter.join();
  const json l = entry("test::server_waited");
  if (kLockContentionCounted) {
    ASSERT_TRUE(seen) << "the lock never counted its waiter";
    ASSERT_FALSE(l.is_null()) << "the waiting lock never showed";
    EXPECT_EQ(l["contended"], 1);
    EXPECT_TRUE(l["wait_ns"].is_number_unsigned());
  }
  EXPECT_TRUE(entry("test::server_idle").is_null());
  EXPECT_TRUE(h_.calls().empty());
}

TEST_F(ServerTest, TheSocketIsPrivateInADirectoryItMade) {
  auto s = start();
  struct stat st {};
  ASSERT_EQ(::stat(path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(dir_.sub("run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u & ~static_cast<unsigned>(::umask(::umask(0))));
  s.reset();
  EXPECT_NE(::access(path().c_str(), F_OK), 0) << "the socket is unlinked at stop";
}

TEST_F(ServerTest, GarbageGetsAnErrorAndTheConnectionStaysUsable) {
  auto s = start();
  RawConn c(path());
  ASSERT_TRUE(c.send("hello\n"));
  json r = c.read_json();
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["error"].get<std::string>().rfind("not JSON: ", 0), 0u) << r;
  r = c.request({{"verb", "x"}});
  EXPECT_EQ(r["error"],
            "verb: expected one of add, rm, ls, devices, locks, watch, ping (got \"x\")");
  ASSERT_TRUE(c.send("\n\n"));  // blank lines are skipped, not answered
  EXPECT_EQ(c.request({{"verb", "rm"}})["error"], "name: expected a string");
  EXPECT_EQ(c.request({{"verb", "ping"}})["ok"], true);
  EXPECT_TRUE(h_.calls().empty());
}

TEST_F(ServerTest, SeveralRequestsInOneWriteAreAnsweredInOrder) {
  auto s = start();
  RawConn c(path());
  ASSERT_TRUE(c.send("{\"verb\":\"ls\"}\n{\"verb\":\"bad\"}\n{\"verb\":\"ping\"}\n"));
  EXPECT_EQ(c.read_json()["views"], json::array());
  EXPECT_EQ(c.read_json()["ok"], false);
  EXPECT_EQ(c.read_json()["version"], "test");
}

TEST_F(ServerTest, TruncatedJsonThenEofJustCloses) {
  auto s = start();
  RawConn c(path());
  ASSERT_TRUE(c.send("{\"verb\":"));
  ASSERT_EQ(::shutdown(c.fd(), SHUT_WR), 0);
  EXPECT_EQ(c.read_line(), std::nullopt);
  EXPECT_TRUE(s->wait_for_connections(0, kDeadline));
  EXPECT_TRUE(h_.calls().empty());
}

// The client writes until the server hangs up; the server reads about a MiB,
// answers once and closes, and then serves the next client.
TEST_F(ServerTest, AHundredMegabyteLineIsAnsweredOnceAndClosed) {
  auto s = start();
  RawConn c(path());
  const std::string chunk(64 * 1024, 'x');
  size_t sent = 0;
  while (sent < 100u * 1000 * 1000 && c.send(chunk)) sent += chunk.size();
  EXPECT_LT(sent, 100u * 1000 * 1000) << "the server never hung up";
  json r = c.read_json();
  EXPECT_EQ(r["error"], "request over 1048576 bytes");
  EXPECT_EQ(c.read_line(), std::nullopt);
  RawConn next(path());
  EXPECT_EQ(next.request({{"verb", "ping"}})["ok"], true);
}

// With a long idle timeout: a silent client holds its own thread only.
TEST_F(ServerTest, ASilentClientDoesNotBlockOthers) {
  ServerOptions o = test_options();
  auto s = start(o);
  RawConn silent(path());
  ASSERT_TRUE(s->wait_for_connections(1, kDeadline));
  RawConn other(path());
  EXPECT_EQ(other.request({{"verb", "ls"}})["ok"], true);
  EXPECT_EQ(s->connections(), 2u) << "the silent client is still connected";
}

TEST_F(ServerTest, ASilentClientIsClosedAfterTheIdleTimeout) {
  ServerOptions o = test_options();
  o.idle_timeout = milliseconds(50);
  auto s = start(o);
  const auto t0 = std::chrono::steady_clock::now();
  RawConn silent(path());
  json r = silent.read_json();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, o.idle_timeout);
  EXPECT_EQ(r["error"], "no complete request in 50 ms: closing");
  EXPECT_TRUE(silent.wait_closed());
  EXPECT_TRUE(s->wait_for_connections(0, kDeadline));
}

TEST_F(ServerTest, ConnectionsBeyondTheLimitAreRefused) {
  ServerOptions o = test_options();
  o.max_connections = 2;
  auto s = start(o);
  RawConn a(path()), b(path());
  ASSERT_EQ(a.request({{"verb", "ping"}})["ok"], true);  // both accepted and served
  ASSERT_EQ(b.request({{"verb", "ping"}})["ok"], true);
  RawConn c(path());
  EXPECT_EQ(c.read_json()["error"], "too many control connections (at most 2)");
  EXPECT_TRUE(c.wait_closed());
  a.close();
  ASSERT_TRUE(s->wait_for_connections(1, kDeadline));
  RawConn d(path());
  EXPECT_EQ(d.request({{"verb", "ping"}})["ok"], true);
}

TEST_F(ServerTest, APeerOfAnotherUidIsRefused) {
  ServerOptions o = test_options();
  auto s = start(o);
  s.reset();
  o.path = path();
  o.allowed_uid = ::geteuid() + 1;
  std::string error;
  s = Server::start(o, h_, &error);
  ASSERT_TRUE(s) << error;
  RawConn c(path());
  EXPECT_EQ(c.read_json()["error"], "permission denied: the control socket is for uid " +
                                        std::to_string(o.allowed_uid) + " (peer uid " +
                                        std::to_string(::geteuid()) + ")");
  EXPECT_TRUE(c.wait_closed());
  EXPECT_TRUE(h_.calls().empty());
}

// A child that became nobody: the 0600 socket keeps it out; when the mode is
// opened by hand, SO_PEERCRED still does. The child forks before any server
// thread exists, so it may use the Client freely.
TEST_F(ServerTest, ANonRootPeerIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
  int go[2], result[2];
  ASSERT_EQ(::pipe(go), 0);
  ASSERT_EQ(::pipe(result), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    char byte;
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(1);
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (::read(go[0], &byte, 1) != 1) _exit(2);
      std::string error, answer;
      auto client = Client::connect(path(), &error);
      if (client) {
        auto r = client->request(json{{"verb", "ls"}}, &error);
        answer = r ? r->value("error", std::string("?")) : error;
      } else {
        answer = error;
      }
      answer += "\n";
      if (::write(result[1], answer.data(), answer.size()) < 0) _exit(3);
    }
    _exit(0);
  }
  auto s = start();
  auto next_answer = [&] {
    EXPECT_EQ(::write(go[1], "g", 1), 1);
    std::string answer;
    char ch;
    while (::read(result[0], &ch, 1) == 1 && ch != '\n') answer += ch;
    return answer;
  };
  EXPECT_EQ(next_answer(),
            "cannot connect to " + path() + ": permission denied (the control socket is for root)");
  ASSERT_EQ(::chmod(path().c_str(), 0666), 0);
  EXPECT_EQ(next_answer(), "permission denied: the control socket is for uid 0 (peer uid 65534)");
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_TRUE(h_.calls().empty());
  for (int fd : {go[0], go[1], result[0], result[1]}) ::close(fd);
}

TEST_F(ServerTest, AStaleSocketIsReplaced) {
  ASSERT_EQ(::mkdir(dir_.sub("run").c_str(), 0755), 0);
  {
    std::string error;
    auto fd = listen_unix(path(), &error);  // bound, then closed without unlink
    ASSERT_TRUE(fd) << error;
  }
  ASSERT_EQ(::access(path().c_str(), F_OK), 0);
  auto s = start();
  RawConn c(path());
  EXPECT_EQ(c.request({{"verb", "ping"}})["ok"], true);
}

TEST_F(ServerTest, ALiveSocketIsRefused) {
  auto s = start();
  ServerOptions o = test_options();
  o.path = path();
  std::string error;
  EXPECT_FALSE(Server::start(o, h_, &error));
  EXPECT_EQ(error, path() + ": another pcifs daemon is listening");
  RawConn c(path());
  EXPECT_EQ(c.request({{"verb", "ping"}})["ok"], true) << "the first server still serves";
}

TEST_F(ServerTest, ANonSocketIsRefusedAndLeftAlone) {
  ASSERT_EQ(::mkdir(dir_.sub("run").c_str(), 0755), 0);
  std::ofstream(path()) << "keep me";
  ServerOptions o = test_options();
  o.path = path();
  std::string error;
  EXPECT_FALSE(Server::start(o, h_, &error));
  EXPECT_EQ(error, path() + ": exists and is not a socket");
  std::ifstream in(path());
  std::string text;
  std::getline(in, text);
  EXPECT_EQ(text, "keep me");
}

TEST_F(ServerTest, AHandlerExceptionIsAnInternalError) {
  auto s = start();
  RawConn c(path());
  h_.set_throw(true);
  EXPECT_EQ(c.request({{"verb", "rm"}, {"name", "c1"}})["error"], "internal error: boom");
  h_.set_throw(false);
  h_.set_ls(json::array());  // not an object
  EXPECT_EQ(c.request({{"verb", "ls"}})["error"], "internal error: the handler answered a array");
  h_.set_ls({{"ok", true}});
  EXPECT_EQ(c.request({{"verb", "ls"}})["ok"], true);
}

// Connections blocked reading, mid-line, and not reading a long answer:
// ~Server wakes them all, joins every thread and closes every socket.
TEST_F(ServerTest, StoppingIsPromptWithBlockedConnections) {
  ServerOptions o = test_options();
  auto s = start(o);
  RawConn silent(path()), midline(path()), deaf(path()), watcher(path());
  ASSERT_TRUE(midline.send("{\"verb\":"));
  h_.set_ls({{"ok", true}, {"views", std::string(8 << 20, 'v')}});
  ASSERT_TRUE(deaf.send_json({{"verb", "ls"}}));  // an 8 MiB answer nobody reads
  ASSERT_EQ(watcher.request({{"verb", "watch"}})["watching"], true);
  ASSERT_TRUE(s->wait_for_connections(4, kDeadline));
  ASSERT_TRUE(eventually([&] { return h_.calls().size() == 1; }));
  auto stopped = std::async(std::launch::async, [&] { s.reset(); });
  ASSERT_EQ(stopped.wait_for(kDeadline), std::future_status::ready) << "~Server hangs";
  EXPECT_TRUE(silent.wait_closed());
  EXPECT_TRUE(midline.wait_closed());
  EXPECT_TRUE(watcher.wait_closed());
  EXPECT_NE(::access(path().c_str(), F_OK), 0);
}

}  // namespace
}  // namespace pcifs::control::test
