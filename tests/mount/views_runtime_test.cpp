// Views at runtime [S16]: a host daemon (`pcifs --control`) takes views with
// `pcifs view add`, lists them, removes them with S12's revoke, keeps them in
// its state directory across restarts and crashes, publishes one CDI spec per
// view, refuses to split an IOMMU group between uids, streams events to
// watchers, and survives bad control clients. Real daemon, real mounts, the
// embedded default devices (01:00.0 and 01:00.1 share IOMMU group 2).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <filesystem>
#include <map>

#include "fixtures/mount_host.hpp"

namespace pcifs::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

std::string view_json(const std::string& name, const std::string& devices, int uid = -1,
                      const std::string& extra = "") {
  std::string j = "{\"name\": \"" + name + "\", \"devices\": [" + devices + "]";
  if (uid >= 0) j += ", \"uid\": " + std::to_string(uid);
  return j + extra + "}";
}

const json* find_view(const json& ls, const std::string& name) {
  for (const auto& v : ls) {
    if (v.value("name", "") == name) return &v;
  }
  return nullptr;
}

class ViewsRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
    host_ = std::make_unique<HostDaemon>();
    ASSERT_TRUE(host_->alive()) << host_->log();
  }
  void TearDown() override {
    if (host_ && !HasFailure()) return;
    if (host_) std::cerr << "--- daemon log\n" << host_->log();
  }
  std::unique_ptr<HostDaemon> host_;
};

TEST_F(ViewsRuntimeTest, AddMountsListsPersistsAndPublishesCdi) {
  auto r = host_->add(view_json("c1", "\"0000:02:00.0\"", 1000));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("c1"), std::string::npos) << r.out;
  const std::string mp = host_->mnt("c1");
  EXPECT_EQ(proc_mounts_on(mp), 1);
  EXPECT_EQ(list_dir(mp + "/devices"), (std::set<std::string>{"0000:02:00.0"}));
  struct stat st {};
  ASSERT_EQ(::stat((mp + "/devices/0000:02:00.0/config").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);

  const json ls = host_->ls();
  const json* v = find_view(ls, "c1");
  ASSERT_NE(v, nullptr) << ls.dump();
  EXPECT_EQ((*v)["mountpoint"], mp);
  EXPECT_EQ((*v)["uid"], 1000);
  EXPECT_EQ((*v)["devices"], json::array({"0000:02:00.0"}));
  EXPECT_EQ((*v)["open_handles"], 0);
  auto text = host_->view({"ls"});
  EXPECT_EQ(text.status, 0);
  EXPECT_NE(text.out.find(mp), std::string::npos) << text.out;

  ASSERT_TRUE(exists(host_->state("c1")));
  EXPECT_EQ(json::parse(slurp(host_->state("c1")))["mountpoint"], mp);
  const json spec = json::parse(slurp(host_->spec("c1")), nullptr, false);
  ASSERT_FALSE(spec.is_discarded());
  // The lowest version its fields need, which Debian 12's podman 4.3 accepts.
  EXPECT_LT(spec["cdiVersion"].get<std::string>(), "0.6.0");
  EXPECT_EQ(spec["kind"], "pcifs.io/view");
  EXPECT_EQ(spec["devices"][0]["name"], "c1");
  EXPECT_EQ(spec["devices"][0]["containerEdits"]["mounts"][0]["hostPath"], mp);

  // The same view again: nothing to do. Another policy under the name: refused.
  r = host_->add(view_json("c1", "\"0000:02:00.0\"", 1000));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("nothing to do"), std::string::npos) << r.out;
  r = host_->add(view_json("c1", "\"0000:02:00.0\"", 1001));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("another policy"), std::string::npos) << r.err;
  EXPECT_EQ(proc_mounts_on(mp), 1);
}

// The same file gives the same error through `view add` as through --view.
TEST_F(ViewsRuntimeTest, BadViewsFailAsTheyDoOnTheCommandLine) {
  for (const std::string body :
       {R"({"name": "b", "config_read": "most"})", R"({"name": "b", "devices": ["01:00"]})",
        R"({"name": "b", "uid": -3})", R"({"name": "b", "colour": "red"})"}) {
    TempFile f(body);
    const auto cli = run_pcifs({"--view=" + f.path(), "/nonexistent"});
    const auto add = host_->view({"add", f.path()});
    EXPECT_EQ(cli.status, 2) << body;
    EXPECT_EQ(add.status, 1) << body;
    std::string want = cli.err.substr(cli.err.find(f.path()));
    want = want.substr(0, want.find('\n'));
    EXPECT_NE(add.err.find(want), std::string::npos) << "cli: " << cli.err << "add: " << add.err;
  }
  auto r = host_->add(R"({"devices": ["0000:02:00.0"]})");  // neither name nor mountpoint
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("name:"), std::string::npos) << r.err;
  r = host_->add(R"({"name": "../etc"})");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("name:"), std::string::npos) << r.err;
  EXPECT_EQ(host_->ls().size(), 0u);
}

// A child that opens a BAR (a claim) and maps it, reports, then on "go"
// reports the errno of a pread and touches its mapping.
class BarUser {
 public:
  explicit BarUser(const std::string& bar) {
    int up[2], down[2];
    if (pipe(up) != 0 || pipe(down) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      signal(SIGBUS, SIG_DFL);  // die of it, even where a sanitizer installed a handler
      close(up[0]);
      close(down[1]);
      const int fd = ::open(bar.c_str(), O_RDWR);
      void* m = fd < 0 ? MAP_FAILED : mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd, 0);
      uint32_t v = 0;
      char ok = fd >= 0 && m != MAP_FAILED && pread(fd, &v, 4, 0) == 4 ? 1 : 0;
      if (ok) v = *static_cast<volatile uint32_t*>(m);
      if (::write(up[1], &ok, 1) != 1) _exit(1);
      char c;
      if (::read(down[0], &c, 1) != 1) _exit(1);
      const char err = pread(fd, &v, 4, 0) < 0 ? static_cast<char>(errno) : 0;
      if (::write(up[1], &err, 1) != 1) _exit(1);
      if (ok) v = *static_cast<volatile uint32_t*>(m);  // expected: SIGBUS
      _exit(0);
    }
    close(up[1]);
    close(down[0]);
    up_ = up[0];
    down_ = down[1];
    char c = 0;
    ready_ = ::read(up_, &c, 1) == 1 && c == 1;
  }
  ~BarUser() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(up_);
    close(down_);
  }
  bool ready() const { return ready_; }
  // Lets it go on: the pread's errno, then how it ended (the wait status).
  std::pair<int, int> go() {
    char c = 1, err = -1;
    if (::write(down_, &c, 1) != 1 || ::read(up_, &err, 1) != 1) return {-1, -1};
    int st = 0;
    waitpid(pid_, &st, 0);
    pid_ = -1;
    return {err, st};
  }

 private:
  pid_t pid_ = -1;
  int up_ = -1, down_ = -1;
  bool ready_ = false;
};

TEST_F(ViewsRuntimeTest, RemoveRevokesHandlesMappingsAndClaimsAndLeavesNothing) {
  ASSERT_EQ(host_->add(view_json("c1", "\"0000:02:00.0\"")).status, 0);
  ASSERT_EQ(host_->add(view_json("c2", "\"0000:02:00.0\"")).status, 0);
  const std::string bar = "/devices/0000:02:00.0/resource0";
  BarUser user(host_->mnt("c1") + bar);
  ASSERT_TRUE(user.ready()) << host_->log();
  // Control: while c1 lives, its claim holds against c2, and c1 lists it.
  EXPECT_EQ(open_errno(host_->mnt("c2") + bar, O_RDWR), EBUSY);
  const json ls = host_->ls();
  const json* v = find_view(ls, "c1");
  ASSERT_NE(v, nullptr) << ls.dump();
  EXPECT_EQ((*v)["open_handles"], 1);
  EXPECT_EQ((*v)["claims"].size(), 1u);

  auto r = host_->view({"rm", "c1"});
  ASSERT_EQ(r.status, 0) << r.err;
  // Its claim ended with it, though the child still holds its fd.
  EXPECT_EQ(open_errno(host_->mnt("c2") + bar, O_RDWR), 0);
  const auto [err, st] = user.go();
  EXPECT_EQ(err, ENODEV);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS) << "wait status " << st;
  // Nothing is left for an engine to bind to.
  EXPECT_FALSE(exists(host_->mnt("c1")));
  EXPECT_EQ(proc_mounts_on(host_->mnt("c1")), 0);
  EXPECT_FALSE(exists(host_->spec("c1")));
  EXPECT_FALSE(exists(host_->state("c1")));
  EXPECT_EQ(find_view(host_->ls(), "c1"), nullptr);
  // Idempotent, with a note.
  r = host_->view({"rm", "c1"});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("no view named c1"), std::string::npos) << r.out;
  // The name can be used again at once.
  ASSERT_EQ(host_->add(view_json("c1", "\"0000:01:00.0\"")).status, 0);
  EXPECT_EQ(list_dir(host_->mnt("c1") + "/devices"), (std::set<std::string>{"0000:01:00.0"}));
}

// A handle opened through a removed view that nobody maps: ENODEV, not ENOTCONN.
TEST_F(ViewsRuntimeTest, RemovedViewAnswersEnodevWhileAProcessHoldsIt) {
  ASSERT_EQ(host_->add(view_json("c1", "\"0000:02:00.0\"")).status, 0);
  const std::string dev = host_->mnt("c1") + "/devices/0000:02:00.0";
  Fd config(dev + "/config", O_RDONLY);
  ASSERT_TRUE(config.ok());
  Fd dir(::open(host_->mnt("c1").c_str(), O_RDONLY | O_DIRECTORY));
  ASSERT_TRUE(dir.ok());
  uint32_t v = 0;
  ASSERT_EQ(pread(config.get(), &v, 4, 0), 4);  // control
  ASSERT_EQ(host_->view({"rm", "c1"}).status, 0);
  EXPECT_EQ(pread(config.get(), &v, 4, 0), -1);
  EXPECT_EQ(errno, ENODEV);
  EXPECT_EQ(::openat(dir.get(), "devices", O_RDONLY | O_DIRECTORY), -1);
  EXPECT_EQ(errno, ENODEV);
  EXPECT_TRUE(host_->alive());
}

TEST_F(ViewsRuntimeTest, ViewsComeBackAfterACleanStopAndAfterACrash) {
  ASSERT_EQ(host_->add(view_json("c1", "\"0000:02:00.0\"", 1000)).status, 0);
  const std::string mp = host_->mnt("c1");
  EXPECT_EQ(host_->stop(SIGTERM), 0) << host_->log();
  // A clean stop leaves no directory and no spec, and keeps the state.
  EXPECT_FALSE(exists(mp));
  EXPECT_FALSE(exists(host_->spec("c1")));
  EXPECT_TRUE(exists(host_->state("c1")));
  ASSERT_TRUE(host_->start()) << host_->log();
  ASSERT_TRUE(eventually([&] { return find_view(host_->ls(), "c1") != nullptr; }));
  EXPECT_EQ(list_dir(mp + "/devices"), (std::set<std::string>{"0000:02:00.0"}));
  EXPECT_TRUE(exists(host_->spec("c1")));

  // A crash leaves a dead mount; the next daemon detaches it and mounts again.
  host_->stop(SIGKILL);
  struct stat st {};
  EXPECT_EQ(::stat(mp.c_str(), &st), -1);
  EXPECT_EQ(errno, ENOTCONN);
  ASSERT_TRUE(host_->start()) << host_->log();
  EXPECT_EQ(list_dir(mp + "/devices"), (std::set<std::string>{"0000:02:00.0"}));
  EXPECT_EQ(proc_mounts_on(mp), 1);
  EXPECT_NE(host_->log().find("dead FUSE mount"), std::string::npos) << host_->log();
}

// A clean stop revokes mappings too: a page mapped before the stop faults
// afresh and gets SIGBUS, it does not stay readable from the cache.
TEST_F(ViewsRuntimeTest, ACleanStopRevokesMappings) {
  ASSERT_EQ(host_->add(view_json("c1", "\"0000:02:00.0\"")).status, 0);
  BarUser user(host_->mnt("c1") + "/devices/0000:02:00.0/resource0");
  ASSERT_TRUE(user.ready()) << host_->log();
  EXPECT_EQ(host_->stop(SIGTERM), 0) << host_->log();
  const auto [err, st] = user.go();
  EXPECT_NE(err, 0) << "the pread after the stop";
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS) << "wait status " << st;
}

// A removed view that a process still holds is ended with the daemon without
// touching its old path, where something else may be mounted by now.
TEST_F(ViewsRuntimeTest, AStopLeavesAloneWhatIsMountedWhereARemovedViewWas) {
  ASSERT_EQ(host_->add(view_json("a", "\"0000:01:00.0\"")).status, 0);
  const std::string mp = host_->mnt("a");
  Fd held(::open((mp + "/devices").c_str(), O_RDONLY | O_DIRECTORY));  // as a container's bind
  ASSERT_TRUE(held.ok());
  ASSERT_EQ(host_->view({"rm", "a"}).status, 0);
  ASSERT_EQ(::mkdir(mp.c_str(), 0755), 0);
  ASSERT_EQ(::mount("other", mp.c_str(), "tmpfs", 0, "size=64k"), 0) << strerror(errno);
  EXPECT_EQ(host_->stop(SIGTERM), 0) << host_->log();
  EXPECT_EQ(proc_mounts_on(mp), 1) << "the daemon unmounted another filesystem";
  ::umount2(mp.c_str(), MNT_DETACH);
}

TEST_F(ViewsRuntimeTest, AnIommuGroupIsNeverSplitBetweenUids) {
  ASSERT_EQ(host_->add(view_json("a", "\"0000:01:00.0\"", 1000)).status, 0);
  auto r = host_->add(view_json("b", "\"0000:01:00.1\"", 2000));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("group:2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("view a"), std::string::npos) << r.err;
  EXPECT_FALSE(exists(host_->mnt("b")));
  // Controls: the same uid, another group, or an explicit share.
  EXPECT_EQ(host_->add(view_json("c", "\"0000:01:00.1\"", 1000)).status, 0);
  EXPECT_EQ(host_->add(view_json("d", "\"0000:02:00.0\"", 2000)).status, 0);
  r = host_->add(view_json("b", "\"0000:01:00.1\"", 2000, ", \"share_iommu_group\": true"));
  EXPECT_EQ(r.status, 0) << r.err;
  // Bridges are exempt: a root port's group holds nothing else here, and the
  // host bridge alone in its group conflicts with nobody.
  EXPECT_EQ(host_->add(view_json("e", "\"0000:00:01.0\"", 3000)).status, 0);
}

// The host's inventory for an orchestrator (pcifs-kube): every function with
// what the scheduler needs, bridges marked, whatever views exist.
TEST_F(ViewsRuntimeTest, DevicesListsTheHostInventory) {
  ControlConn c(host_->sock());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send("{\"verb\":\"devices\"}\n"));
  auto l = c.line();
  ASSERT_TRUE(l);
  const json r = json::parse(*l);
  ASSERT_TRUE(r.value("ok", false)) << *l;
  std::map<std::string, json> by_bdf;
  for (const auto& d : r["devices"]) by_bdf[d["bdf"]] = d;
  ASSERT_EQ(by_bdf.count("0000:01:00.0"), 1u) << *l;
  const json& a = by_bdf["0000:01:00.0"];
  EXPECT_EQ(a["iommu_group"], 2);
  EXPECT_EQ(by_bdf["0000:01:00.1"]["iommu_group"], 2);
  EXPECT_EQ(a["bridge"], false);
  EXPECT_EQ(a["health"], "ok");
  EXPECT_EQ(a["pcie_root"], "pci0000:00");
  EXPECT_TRUE(a["driver"].is_null());
  EXPECT_EQ(a["vendor"].get<std::string>().size(), 6u);
  EXPECT_EQ(a["class"].get<std::string>().size(), 8u);
  ASSERT_EQ(by_bdf.count("0000:00:01.0"), 1u);
  EXPECT_EQ(by_bdf["0000:00:01.0"]["bridge"], true);
  // Every function of the backend, views or not: no view exists yet.
  EXPECT_TRUE(host_->ls().empty());
}

TEST_F(ViewsRuntimeTest, WatchStreamsViewsClaimsPowerAndHealth) {
  ControlConn w(host_->sock());
  ASSERT_TRUE(w.connected());
  ASSERT_TRUE(w.send("{\"verb\":\"watch\"}\n"));
  auto ok = w.line();
  ASSERT_TRUE(ok && json::parse(*ok).value("ok", false)) << ok.value_or("(none)");
  ASSERT_EQ(host_->add(view_json("c1", "\"0000:02:00.0\"")).status, 0);
  const std::string dev = host_->mnt("c1") + "/devices/0000:02:00.0";
  {
    Holder h([&] { return ::open((dev + "/resource0").c_str(), O_RDWR) >= 0 ? 0 : 1; });
    ASSERT_EQ(h.result(), 0);
  }
  ASSERT_TRUE(wait_unclaimed(dev));  // the holder's claim ended: cleaned first
  // Held open until the health monitor has seen D3hot: closing it ends the
  // claim, and the hand-over brings the device back to D0.
  Fd p(dev + "/power_state", O_WRONLY);
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(::write(p.get(), "D3hot", 5), 5);
  // Until the health monitor (every second, against the state at start) has
  // seen the device in D3hot, then until the view has gone; bounded waits.
  std::vector<std::string> seen;
  bool removed = false, low_power = false;
  size_t handed_over = 0;
  while (!removed || !low_power) {
    auto l = w.line();
    ASSERT_TRUE(l) << "events so far: " << json(seen).dump();
    const json e = json::parse(*l);
    const std::string kind = e["event"].get<std::string>();
    if (kind == "health") {
      low_power |= e["bdf"] == "0000:02:00.0" && e["health"] == "low-power";
      if (low_power && p.ok()) {
        p.reset();
        ASSERT_EQ(host_->view({"rm", "c1"}).status, 0);
      }
      continue;
    }
    removed |= kind == "view_removed";
    if (kind == "claim_released") continue;  // the daemon sees a close a little later
    if (kind == "handed_over") {             // from the hand-over thread, in its own time
      ++handed_over;
      continue;
    }
    seen.push_back(kind +
                   (e.contains("power_state") ? ":" + e["power_state"].get<std::string>() : ""));
    if (kind == "claim_taken") {
      EXPECT_EQ(e["bdf"], "0000:02:00.0");
    }
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"view_added", "claim_taken", "claim_taken",
                                            "power:D3hot", "view_removed"}));
  EXPECT_GE(handed_over, 1u) << "the first claim's hand-over came before the second claim";
}

TEST_F(ViewsRuntimeTest, BadControlClientsGetAnErrorAndEveryViewKeepsServing) {
  ASSERT_EQ(host_->add(view_json("c1", "\"0000:02:00.0\"")).status, 0);
  const std::string config = host_->mnt("c1") + "/devices/0000:02:00.0/config";
  ControlConn idle(host_->sock());  // connects and never writes
  ASSERT_TRUE(idle.connected());
  {
    ControlConn c(host_->sock());
    for (const std::string bad : {"garbage\n", "{\"verb\":\"fly\"}\n", "[1,2]\n", "{\"verb\":\n"}) {
      ASSERT_TRUE(c.send(bad));
      auto l = c.line();
      ASSERT_TRUE(l) << bad;
      EXPECT_FALSE(json::parse(*l).value("ok", true)) << *l;
    }
    EXPECT_TRUE(c.request({{"verb", "ls"}}).value("ok", false));  // still usable
  }
  {
    ControlConn c(host_->sock());
    ASSERT_TRUE(c.send("{\"verb\":\"ls\""));  // truncated, then closed
  }
  {
    ControlConn c(host_->sock());  // a 100 MB line: one error, then closed
    const std::string chunk(1 << 20, 'x');
    bool closed = false;
    for (int i = 0; i < 100 && !closed; ++i) closed = !c.send(chunk);
    // The error line may be lost to the reset of a close with unread bytes:
    // what must hold is an error or a closed connection, never a hang.
    if (auto l = c.line()) {
      EXPECT_NE(l->find("request over"), std::string::npos) << *l;
      EXPECT_FALSE(c.line().has_value());
    }
  }
  // A user other than root cannot use the socket.
  const std::string out =
      run_capture("runuser -u nobody -- " + build_dir() +
                  "/pcifs view ls --control=" + host_->sock() + " 2>&1; echo status=$?");
  EXPECT_NE(out.find("status=3"), std::string::npos) << out;
  EXPECT_NE(out.find("ermission denied"), std::string::npos) << out;
  // While the idle client is still connected, the daemon serves everyone.
  EXPECT_EQ(host_->view({"ls"}).status, 0);
  Fd f(config, O_RDONLY);
  uint32_t v = 0;
  EXPECT_EQ(pread(f.get(), &v, 4, 0), 4);
  EXPECT_EQ(v, 0x10f21b36u);
  EXPECT_TRUE(host_->alive());
}

}  // namespace
}  // namespace pcifs::testing
