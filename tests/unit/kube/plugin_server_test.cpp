// PluginServer over real gRPC on unix sockets in a temp directory, driven by
// the fake kubelet (tests/fixtures/kubelet_harness.hpp) against a fake
// DraHandler: registration, the Prepare/Unprepare translation (every claim
// answered, per-claim errors, a handler that throws), and the socket files'
// life cycle (stale socket replaced, other files refused, removed at stop,
// restart on the same paths).
#include "kube/plugin_server.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>

#include "fixtures/kubelet_harness.hpp"

namespace pcifs::kube {
namespace {

namespace fs = std::filesystem;
using test::FakeKubelet;

class TempDir {
 public:
  TempDir() {
    std::string t = (fs::temp_directory_path() / "pcifs-kube-XXXXXX").string();
    if (::mkdtemp(t.data()) == nullptr) throw std::runtime_error("mkdtemp");
    path_ = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Calls are recorded and answered by the test's functions; gRPC calls the
// handler on its own threads, hence the lock (libgrpc is not TSan-instrumented,
// so the test synchronises with the handler itself).
class FakeHandler : public DraHandler {
 public:
  using PrepareFn =
      std::function<std::map<std::string, PrepareResult>(const std::vector<ClaimRef>&)>;
  using UnprepareFn =
      std::function<std::map<std::string, std::string>(const std::vector<ClaimRef>&)>;

  void on_prepare(PrepareFn f) {
    MutexLock lock(mu_);
    on_prepare_ = std::move(f);
  }
  void on_unprepare(UnprepareFn f) {
    MutexLock lock(mu_);
    on_unprepare_ = std::move(f);
  }

  std::map<std::string, PrepareResult> prepare(const std::vector<ClaimRef>& claims) override {
    PrepareFn f;
    {
      MutexLock lock(mu_);
      prepared_.push_back(claims);
      f = on_prepare_;
    }
    return f(claims);
  }
  std::map<std::string, std::string> unprepare(const std::vector<ClaimRef>& claims) override {
    UnprepareFn f;
    {
      MutexLock lock(mu_);
      unprepared_.push_back(claims);
      f = on_unprepare_;
    }
    return f(claims);
  }
  std::vector<std::vector<ClaimRef>> prepared() {
    MutexLock lock(mu_);
    return prepared_;
  }
  std::vector<std::vector<ClaimRef>> unprepared() {
    MutexLock lock(mu_);
    return unprepared_;
  }

 private:
  Mutex mu_;
  PrepareFn on_prepare_ GUARDED_BY(mu_) = [](const std::vector<ClaimRef>& claims) {
    std::map<std::string, PrepareResult> r;
    for (const auto& c : claims) r[c.uid] = {};
    return r;
  };
  UnprepareFn on_unprepare_ GUARDED_BY(mu_) = [](const std::vector<ClaimRef>& claims) {
    std::map<std::string, std::string> r;
    for (const auto& c : claims) r[c.uid] = "";
    return r;
  };
  std::vector<std::vector<ClaimRef>> prepared_ GUARDED_BY(mu_);
  std::vector<std::vector<ClaimRef>> unprepared_ GUARDED_BY(mu_);
};

class PluginServerTest : public ::testing::Test {
 protected:
  PluginServerOptions options() const {
    PluginServerOptions o;
    o.registry_dir = tmp_.path() + "/registry";
    o.plugins_dir = tmp_.path() + "/plugins";
    return o;
  }
  std::string reg_path() const { return tmp_.path() + "/registry/pcifs.io-reg.sock"; }
  std::string dra_path() const { return tmp_.path() + "/plugins/pcifs.io/dra.sock"; }

  static bool is_socket(const std::string& p) {
    struct stat st {};
    return ::lstat(p.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
  }
  // A socket file nobody listens on: what a killed agent leaves behind.
  static void leave_dead_socket(const std::string& p) {
    fs::create_directories(fs::path(p).parent_path());
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, p.c_str(), p.size() + 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
    ::close(fd);
    ASSERT_TRUE(is_socket(p));
  }
  static void write_file(const std::string& p, const std::string& text) {
    fs::create_directories(fs::path(p).parent_path());
    std::ofstream(p) << text;
  }
  static std::string read_file(const std::string& p) {
    std::ifstream in(p);
    return {std::istreambuf_iterator<char>(in), {}};
  }

  TempDir tmp_;
  FakeHandler handler_;
};

TEST_F(PluginServerTest, RegistrationAnswersGetInfoAndRecordsTheStatus) {
  PluginServer server(options(), handler_);
  std::vector<RegistrationState> seen;
  Mutex seen_mu;
  server.on_registration([&](const RegistrationState& s) {
    MutexLock lock(seen_mu);
    seen.push_back(s);
  });
  std::string err;
  ASSERT_TRUE(server.start(&err)) << err;
  EXPECT_FALSE(server.registration().notified);
  EXPECT_EQ(server.registration_socket(), reg_path());
  EXPECT_EQ(server.dra_socket(), dra_path());

  FakeKubelet k;
  ASSERT_TRUE(k.discover(options().registry_dir)) << k.last_error();
  EXPECT_EQ(k.registration_socket(), reg_path());
  EXPECT_EQ(k.info().type(), "DRAPlugin");
  EXPECT_EQ(k.info().name(), "pcifs.io");
  EXPECT_EQ(k.info().endpoint(), dra_path());
  ASSERT_EQ(k.info().supported_versions_size(), 1);
  EXPECT_EQ(k.info().supported_versions(0), "v1.DRAPlugin");

  ASSERT_TRUE(server.wait_registration(std::chrono::seconds(60)));
  RegistrationState st = server.registration();
  EXPECT_TRUE(st.notified);
  EXPECT_TRUE(st.registered);
  EXPECT_EQ(st.error, "");

  // A kubelet that refuses: recorded with its reason.
  FakeKubelet refusing;
  EXPECT_FALSE(refusing.discover(options().registry_dir, "version not supported"));
  st = server.registration();
  EXPECT_TRUE(st.notified);
  EXPECT_FALSE(st.registered);
  EXPECT_EQ(st.error, "version not supported");

  MutexLock lock(seen_mu);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen[0].registered);
  EXPECT_FALSE(seen[1].registered);
  EXPECT_EQ(seen[1].error, "version not supported");
}

TEST_F(PluginServerTest, DraDirectoryAndSocketsAreCreatedPrivate) {
  PluginServer server(options(), handler_);
  std::string err;
  ASSERT_TRUE(server.start(&err)) << err;
  struct stat st {};
  ASSERT_EQ(::stat((tmp_.path() + "/plugins/pcifs.io").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  ASSERT_EQ(::lstat(dra_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::lstat(reg_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(PluginServerTest, PrepareAndUnprepareAnswerEveryClaim) {
  handler_.on_prepare([](const std::vector<ClaimRef>&) {
    std::map<std::string, PrepareResult> r;
    r["uid-a"].devices = {
        {{"gpu", "nic"}, "node-1", "pci-0000-03-00-0", {"pcifs.io/view=uid-a"}},
        {{}, "node-1", "group-7", {"pcifs.io/view=uid-a", "pcifs.io/extra=x"}},
    };
    r["uid-b"].error = "device 0000:04:00.0 is bound to a kernel driver";
    r["uid-b"].devices = {{{}, "node-1", "ignored", {}}};  // failed: devices dropped
    r["uid-stranger"].error = "not asked for";             // not in the request: dropped
    return r;                                              // uid-c: no result
  });
  handler_.on_unprepare([](const std::vector<ClaimRef>&) {
    return std::map<std::string, std::string>{{"uid-a", ""}, {"uid-b", "view busy"}};
  });
  PluginServer server(options(), handler_);
  std::string err;
  ASSERT_TRUE(server.start(&err)) << err;
  FakeKubelet k;
  ASSERT_TRUE(k.discover(options().registry_dir)) << k.last_error();

  const std::vector<ClaimRef> claims = {
      {"default", "uid-a", "claim-a"}, {"team", "uid-b", "claim-b"}, {"team", "uid-c", "claim-c"}};
  const auto p = k.prepare(claims);
  ASSERT_TRUE(p.ok) << p.status;
  ASSERT_EQ(p.claims.size(), 3u);
  const PrepareResult& a = p.claims.at("uid-a");
  EXPECT_EQ(a.error, "");
  ASSERT_EQ(a.devices.size(), 2u);
  EXPECT_EQ(a.devices[0].request_names, (std::vector<std::string>{"gpu", "nic"}));
  EXPECT_EQ(a.devices[0].pool, "node-1");
  EXPECT_EQ(a.devices[0].device, "pci-0000-03-00-0");
  EXPECT_EQ(a.devices[0].cdi_device_ids, std::vector<std::string>{"pcifs.io/view=uid-a"});
  EXPECT_TRUE(a.devices[1].request_names.empty());
  EXPECT_EQ(a.devices[1].device, "group-7");
  EXPECT_EQ(a.devices[1].cdi_device_ids.size(), 2u);
  EXPECT_EQ(p.claims.at("uid-b").error, "device 0000:04:00.0 is bound to a kernel driver");
  EXPECT_TRUE(p.claims.at("uid-b").devices.empty());
  EXPECT_NE(p.claims.at("uid-c").error.find("no result"), std::string::npos);

  // The handler saw the claims as the kubelet sent them.
  const auto calls = handler_.prepared();
  ASSERT_EQ(calls.size(), 1u);
  ASSERT_EQ(calls[0].size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(calls[0][i].ns, claims[i].ns);
    EXPECT_EQ(calls[0][i].uid, claims[i].uid);
    EXPECT_EQ(calls[0][i].name, claims[i].name);
  }

  const auto u = k.unprepare(claims);
  ASSERT_TRUE(u.ok) << u.status;
  ASSERT_EQ(u.claims.size(), 3u);
  EXPECT_EQ(u.claims.at("uid-a"), "");
  EXPECT_EQ(u.claims.at("uid-b"), "view busy");
  EXPECT_NE(u.claims.at("uid-c").find("no result"), std::string::npos);
  ASSERT_EQ(handler_.unprepared().size(), 1u);
  EXPECT_EQ(handler_.unprepared()[0][1].ns, "team");
}

TEST_F(PluginServerTest, AHandlerThatThrowsFailsEachClaimAndTheServerKeepsServing) {
  handler_.on_prepare([](const std::vector<ClaimRef>&) -> std::map<std::string, PrepareResult> {
    throw std::runtime_error("control socket vanished");
  });
  handler_.on_unprepare([](const std::vector<ClaimRef>&) -> std::map<std::string, std::string> {
    throw 42;  // not even a std::exception
  });
  PluginServer server(options(), handler_);
  std::string err;
  ASSERT_TRUE(server.start(&err)) << err;
  FakeKubelet k;
  ASSERT_TRUE(k.discover(options().registry_dir)) << k.last_error();
  const std::vector<ClaimRef> claims = {{"ns", "u1", "c1"}, {"ns", "u2", "c2"}};

  const auto p = k.prepare(claims);
  ASSERT_TRUE(p.ok) << p.status;
  ASSERT_EQ(p.claims.size(), 2u);
  for (const auto& [uid, r] : p.claims) {
    EXPECT_NE(r.error.find("control socket vanished"), std::string::npos) << uid;
  }
  const auto u = k.unprepare(claims);
  ASSERT_TRUE(u.ok) << u.status;
  ASSERT_EQ(u.claims.size(), 2u);
  for (const auto& [uid, e] : u.claims) EXPECT_NE(e.find("unknown exception"), std::string::npos);

  // Still serving, and a handler that recovers is answered normally.
  handler_.on_prepare([](const std::vector<ClaimRef>& cs) {
    std::map<std::string, PrepareResult> r;
    for (const auto& c : cs) r[c.uid] = {};
    return r;
  });
  const auto again = k.prepare(claims);
  ASSERT_TRUE(again.ok) << again.status;
  EXPECT_EQ(again.claims.at("u1").error, "");
}

TEST_F(PluginServerTest, StaleSocketsAreReplaced) {
  leave_dead_socket(reg_path());
  leave_dead_socket(dra_path());
  PluginServer server(options(), handler_);
  std::string err;
  ASSERT_TRUE(server.start(&err)) << err;
  FakeKubelet k;
  ASSERT_TRUE(k.discover(options().registry_dir)) << k.last_error();
  const auto p = k.prepare({{"ns", "u1", "c1"}});
  ASSERT_TRUE(p.ok) << p.status;
  EXPECT_EQ(p.claims.size(), 1u);
}

TEST_F(PluginServerTest, AFileThatIsNotASocketIsRefused) {
  for (const bool at_registration : {true, false}) {
    SCOPED_TRACE(at_registration ? "registration socket" : "DRA socket");
    const std::string path = at_registration ? reg_path() : dra_path();
    write_file(path, "not yours\n");
    PluginServer server(options(), handler_);
    std::string err;
    EXPECT_FALSE(server.start(&err));
    EXPECT_NE(err.find(path), std::string::npos) << err;
    EXPECT_NE(err.find("not a socket"), std::string::npos) << err;
    EXPECT_FALSE(server.running());
    EXPECT_EQ(read_file(path), "not yours\n");
    // Nothing half-started: no socket left at the other path either.
    EXPECT_FALSE(is_socket(at_registration ? dra_path() : reg_path()));
    fs::remove(path);
  }
}

TEST_F(PluginServerTest, ASocketAnotherServerServesIsRefused) {
  PluginServer first(options(), handler_);
  std::string err;
  ASSERT_TRUE(first.start(&err)) << err;
  PluginServer second(options(), handler_);
  EXPECT_FALSE(second.start(&err));
  EXPECT_NE(err.find("another process is serving"), std::string::npos) << err;
  // The first one is untouched.
  FakeKubelet k;
  ASSERT_TRUE(k.discover(options().registry_dir)) << k.last_error();
  EXPECT_TRUE(k.prepare({{"ns", "u", "c"}}).ok);
}

TEST_F(PluginServerTest, StopRemovesTheSocketsAndRestartServesAgain) {
  PluginServer server(options(), handler_);
  std::string err;
  ASSERT_TRUE(server.start(&err)) << err;
  ASSERT_TRUE(is_socket(reg_path()));
  ASSERT_TRUE(is_socket(dra_path()));
  server.stop();
  EXPECT_FALSE(fs::exists(reg_path()));
  EXPECT_FALSE(fs::exists(dra_path()));
  EXPECT_FALSE(server.running());
  server.stop();  // idempotent

  ASSERT_TRUE(server.start(&err)) << err;
  FakeKubelet k;
  ASSERT_TRUE(k.discover(options().registry_dir)) << k.last_error();
  ASSERT_TRUE(server.wait_registration(std::chrono::seconds(60)));
  EXPECT_TRUE(server.registration().registered);
  const auto p = k.prepare({{"ns", "u1", "c1"}});
  ASSERT_TRUE(p.ok) << p.status;

  // A new server object on the same paths after this one stopped.
  server.stop();
  PluginServer next(options(), handler_);
  ASSERT_TRUE(next.start(&err)) << err;
  FakeKubelet k2;
  ASSERT_TRUE(k2.discover(options().registry_dir)) << k2.last_error();
  EXPECT_TRUE(k2.prepare({{"ns", "u2", "c2"}}).ok);
}

TEST_F(PluginServerTest, StopLeavesAFileThatReplacedItsSocket) {
  PluginServer server(options(), handler_);
  std::string err;
  ASSERT_TRUE(server.start(&err)) << err;
  fs::remove(reg_path());
  write_file(reg_path(), "someone else's\n");
  server.stop();
  EXPECT_EQ(read_file(reg_path()), "someone else's\n");
  EXPECT_FALSE(fs::exists(dra_path()));
}

TEST_F(PluginServerTest, ARelativeDirectoryGivesAnAbsoluteEndpoint) {
  const fs::path cwd = fs::current_path();
  fs::current_path(tmp_.path());
  PluginServerOptions o;
  o.registry_dir = "registry";
  o.plugins_dir = "./plugins/../plugins";
  PluginServer server(o, handler_);
  fs::current_path(cwd);
  EXPECT_EQ(server.dra_socket(), dra_path());
  EXPECT_EQ(server.registration_socket(), reg_path());
}

}  // namespace
}  // namespace pcifs::kube
