// `pcifs view add|rm|ls|watch|locks` (fs/control/cli.hpp, client.hpp) against a
// Server with a fake Handler: what is sent, what is printed, and the exit
// statuses 0 (done), 1 (the daemon said no), 2 (usage), 3 (no daemon).
#include "control/cli.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <future>
#include <sstream>
#include <streambuf>
#include <thread>

#include "control/client.hpp"
#include "fixtures/lock_wait.hpp"
#include "pcifs/sync.hpp"
#include "unit/control/control_test_util.hpp"

namespace pcifs::control::test {
namespace {

// An ostream buffer another thread may read while `watch` writes to it.
class LockedBuf : public std::streambuf {
 public:
  std::string text() const {
    MutexLock lock(mu_);
    return text_;
  }

 protected:
  int_type overflow(int_type c) override {
    if (c != traits_type::eof()) {
      MutexLock lock(mu_);
      text_.push_back(static_cast<char>(c));
    }
    return c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    MutexLock lock(mu_);
    text_.append(s, static_cast<size_t>(n));
    return n;
  }

 private:
  mutable Mutex mu_;
  std::string text_ GUARDED_BY(mu_);
};

struct CliRun {
  int status = -1;
  std::string out, err;
};

class CliTest : public ::testing::Test {
 protected:
  std::string path() const { return dir_.sub("control.sock"); }
  void SetUp() override { server_ = start_server(path(), h_); }

  // `pcifs ARGS...`; --control PATH is added after `view` unless the
  // arguments name one.
  CliRun run(std::vector<std::string> args, const std::string& stdin_text = "") {
    if (std::find(args.begin(), args.end(), "--control") == args.end()) {
      args.insert(args.begin() + 1, {"--control", path()});
    }
    CLI::App app{"pcifs", "pcifs"};
    ViewCli state;
    add_view_cli(app, state);
    std::vector<const char*> argv{"pcifs"};
    for (const auto& a : args) argv.push_back(a.c_str());
    app.parse(static_cast<int>(argv.size()), argv.data());
    std::istringstream in(stdin_text);
    std::ostringstream out, err;
    CliRun r;
    r.status = run_view_cli(app, state, in, out, err).value_or(-1);
    r.out = out.str();
    r.err = err.str();
    return r;
  }
  std::string write_file(const std::string& name, const std::string& text) {
    std::ofstream(dir_.sub(name)) << text;
    return dir_.sub(name);
  }

  TempDir dir_;
  FakeHandler h_;
  std::unique_ptr<Server> server_;
};

TEST_F(CliTest, AddSendsTheFileAndSaysWhereTheViewIs) {
  const std::string file = write_file("c1.json", R"({"mountpoint":"/run/pcifs/c1","uid":7})");
  CliRun r = run({"view", "add", file});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "view c1 mounted at /run/pcifs/c1 (CDI device pcifs.io/view=c1)\n");
  EXPECT_EQ(h_.calls(), std::vector<std::string>{"add " + file +
                                                 " {\"mountpoint\":\"/run/pcifs/c1\",\"uid\":7}"});
}

TEST_F(CliTest, AddFromStdinAndWhatIsPresentIsPrinted) {
  h_.set_add({{"ok", true}, {"view", {{"name", "c2"}}}});
  CliRun r = run({"view", "add", "-"}, "{\"uid\":1}");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "view c2 added\n");
  EXPECT_EQ(h_.calls(), std::vector<std::string>{"add <stdin> {\"uid\":1}"});
  h_.set_add({{"ok", true}, {"note", "view c2 is already mounted"}});
  EXPECT_EQ(run({"view", "add", "-"}, "{}").out, "view c2 is already mounted\n");
}

TEST_F(CliTest, TheDaemonsErrorIsStatus1) {
  h_.set_add({{"ok", false}, {"error", "c1.json: uid: expected a number"}});
  CliRun r = run({"view", "add", write_file("c1.json", "{}")});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err, "pcifs: view add: c1.json: uid: expected a number\n");
  EXPECT_EQ(r.out, "");
}

TEST_F(CliTest, AnUnreadableOrNonJsonFileIsStatus2) {
  CliRun missing = run({"view", "add", dir_.sub("nope.json")});
  EXPECT_EQ(missing.status, 2);
  EXPECT_EQ(missing.err, "pcifs: view add: cannot read " + dir_.sub("nope.json") +
                             ": No such file or directory\n");
  const std::string bad = write_file("bad.json", "{\"uid\":");
  CliRun syntax = run({"view", "add", bad});
  EXPECT_EQ(syntax.status, 2);
  EXPECT_EQ(syntax.err.rfind("pcifs: view add: " + bad + ": not JSON: ", 0), 0u) << syntax.err;
  CliRun array = run({"view", "add", write_file("a.json", "[]")});
  EXPECT_EQ(array.status, 2);
  EXPECT_NE(array.err.find("expected a JSON object"), std::string::npos) << array.err;
  EXPECT_TRUE(h_.calls().empty());
}

TEST_F(CliTest, ABadCommandLineThrowsForMainToReport) {
  CLI::App app{"pcifs", "pcifs"};
  ViewCli state;
  add_view_cli(app, state);
  for (std::vector<const char*> argv : {std::vector<const char*>{"pcifs", "view", "add"},
                                        {"pcifs", "view"},
                                        {"pcifs", "view", "rm"},
                                        {"pcifs", "view", "ls", "extra"}}) {
    EXPECT_THROW(app.parse(static_cast<int>(argv.size()), argv.data()), CLI::ParseError)
        << argv.size();
    app.clear();
  }
}

TEST_F(CliTest, NotViewIsNotOurs) {
  CLI::App app{"pcifs", "pcifs"};
  ViewCli state;
  add_view_cli(app, state);
  std::vector<const char*> argv{"pcifs"};
  app.parse(1, argv.data());
  EXPECT_EQ(run_view_cli(app, state), std::nullopt);
}

TEST_F(CliTest, NoDaemonIsStatus3) {
  server_.reset();
  CliRun r = run({"view", "--control", path(), "ls"});
  EXPECT_EQ(r.status, 3);
  EXPECT_EQ(r.err, "pcifs: view ls: cannot connect to " + path() +
                       ": No such file or directory (is the pcifs host daemon running? start it "
                       "with pcifs --control=" +
                       path() + ")\n");
}

TEST_F(CliTest, ARefusedConnectionIsStatus1WithTheDaemonsWords) {
  server_.reset();
  ServerOptions o = test_options();
  o.path = path();
  o.allowed_uid = ::geteuid() + 1;
  std::string error;
  server_ = Server::start(o, h_, &error);
  ASSERT_TRUE(server_) << error;
  CliRun r = run({"view", "ls"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("pcifs: view ls: permission denied: the control socket is for uid"),
            std::string::npos)
      << r.err;
}

// The server runs in this process, so a lock made to wait here is the
// daemon's: one waiting acquisition, counted before the lock is given up.
TEST_F(CliTest, LocksPrintsEveryLockThatWaited) {
  Mutex m("test::cli_waited");
  m.lock();
  std::thread waiter([&] { MutexLock lock(m); });
  const bool seen = kLockContentionCounted && pcifs::test::wait_contended("test::cli_waited", 1);
  m.unlock();
  waiter.join();
  CliRun r = run({"view", "locks"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.rfind("LOCK", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("CONTENDED  WAITED_MS"), std::string::npos) << r.out;
  CliRun j = run({"view", "locks", "--json"});
  EXPECT_EQ(j.status, 0) << j.err;
  const json locks = json::parse(j.out);
  ASSERT_TRUE(locks.is_array());
  if (!kLockContentionCounted) {
    EXPECT_EQ(r.err, "pcifs: view locks: this daemon does not count contention (a TSan build)\n");
    return;
  }
  ASSERT_TRUE(seen) << "the lock never counted its waiter";
  EXPECT_EQ(r.err, "");
  EXPECT_NE(r.out.find("\ntest::cli_waited "), std::string::npos) << r.out;
  bool found = false;
  for (const auto& l : locks) {
    if (l["name"] != "test::cli_waited") continue;
    found = true;
    EXPECT_EQ(l["contended"], 1);
  }
  EXPECT_TRUE(found) << j.out;
  EXPECT_TRUE(h_.calls().empty());
}

TEST_F(CliTest, RmSaysRemovedOrTheNote) {
  CliRun r = run({"view", "rm", "c1"});
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, "view c1 removed\n");
  h_.set_rm({{"ok", true}, {"note", "no view named c9"}});
  EXPECT_EQ(run({"view", "rm", "c9"}).out, "no view named c9\n");
  EXPECT_EQ(h_.calls(), (std::vector<std::string>{"rm c1", "rm c9"}));
}

json two_views() {
  return {{"ok", true},
          {"views",
           {{{"name", "c1"},
             {"mountpoint", "/run/pcifs/c1"},
             {"uid", 100000},
             {"devices", {"0000:01:00.0", "0000:02:00.0"}},
             {"open_handles", 3},
             {"claims", {{{"bdf", "0000:01:00.0"}, {"pid", 42}, {"uid", 100000}}}}},
            {{"name", "default"},
             {"mountpoint", "/sys/bus/pci-x"},
             {"uid", nullptr},
             {"devices", json::array()},
             {"open_handles", 0},
             {"claims", json::array()}}}}};
}

TEST_F(CliTest, LsPrintsATable) {
  h_.set_ls(two_views());
  CliRun r = run({"view", "ls"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(
      r.out,
      "NAME     MOUNTPOINT      UID     DEVICES                    HANDLES  CLAIMS\n"
      "c1       /run/pcifs/c1   100000  0000:01:00.0,0000:02:00.0  3        0000:01:00.0(pid 42)\n"
      "default  /sys/bus/pci-x  -       -                          0        -\n");
}

// --control is accepted after `view` (the other tests) and after the verb.
TEST_F(CliTest, LsJsonPrintsTheViewsArrayWithControlAfterTheVerb) {
  h_.set_ls(two_views());
  CliRun r = run({"view", "ls", "--json", "--control", path()});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(json::parse(r.out), two_views()["views"]);
}

TEST_F(CliTest, WatchPrintsEachEventUntilTheDaemonCloses) {
  CLI::App app{"pcifs", "pcifs"};
  ViewCli state;
  add_view_cli(app, state);
  const std::string p = path();
  std::vector<const char*> argv{"pcifs", "view", "watch", "--control", p.c_str()};
  app.parse(static_cast<int>(argv.size()), argv.data());
  LockedBuf buf;
  std::ostream out(&buf);
  std::istringstream in;
  std::ostringstream err;
  auto status = std::async(std::launch::async,
                           [&] { return run_view_cli(app, state, in, out, err).value_or(-1); });
  ASSERT_TRUE(server_->wait_for_watchers(1, kDeadline));
  server_->publish({{"event", "device"}, {"seq", 1}});
  server_->publish({{"event", "device"}, {"seq", 2}});
  const std::string expected =
      "{\"event\":\"device\",\"seq\":1}\n{\"event\":\"device\",\"seq\":2}\n";
  EXPECT_TRUE(eventually([&] { return buf.text() == expected; })) << buf.text();
  server_.reset();
  ASSERT_EQ(status.wait_for(kDeadline), std::future_status::ready);
  EXPECT_EQ(status.get(), 3);
  EXPECT_EQ(err.str(), "pcifs: view watch: connection closed by the daemon\n");
}

TEST_F(CliTest, ClientErrorsAreSentences) {
  std::string error;
  Client::connect(dir_.sub("none.sock"), &error);
  EXPECT_NE(error.find("is the pcifs host daemon running?"), std::string::npos) << error;
  auto c = Client::connect(path(), &error);
  ASSERT_TRUE(c) << error;
  auto r = c->request({{"verb", "ping"}}, &error);
  ASSERT_TRUE(r) << error;
  EXPECT_EQ((*r)["version"], "test");
  server_.reset();
  r = c->request({{"verb", "ping"}}, &error);
  EXPECT_FALSE(r);
  EXPECT_EQ(error, "connection closed by the daemon");
}

}  // namespace
}  // namespace pcifs::control::test
