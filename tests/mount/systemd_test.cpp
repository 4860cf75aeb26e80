// The systemd template unit tools/systemd/pcifs@.service.in, run the way
// systemd runs it: @PCIFS_BINDIR@ and %i substituted, /etc/pcifs/ moved to a
// temp dir, $$ unescaped, an unset $VAR word dropped, NOTIFY_SOCKET pointing
// at a datagram socket this test owns. READY=1 must come only once the view
// is served, STOPPING=1 on SIGTERM, then a clean exit with nothing mounted.
// Controls: without NOTIFY_SOCKET nothing arrives and the daemon still works;
// a socket that does not exist is not fatal. ExecStartPre creates the
// mountpoint; ExecStopPost detaches the dead mount a SIGKILLed daemon leaves.
// `systemd-analyze verify` checks the generated unit where it is installed.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <map>

#include "fixtures/mount_util.hpp"

extern char** environ;

namespace pcifs::testing {
namespace {

const std::set<std::string> kViewDevices = {"0000:01:00.0", "0000:02:00.0"};

std::string source_dir() {
  if (const char* s = std::getenv("PCIFS_SOURCE_DIR")) return s;
  const std::string f = __FILE__;
  return f.substr(0, f.rfind("/tests/mount/"));
}

std::string abs_build_dir() {
  char buf[PATH_MAX];
  return realpath(build_dir().c_str(), buf) ? buf : build_dir();
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
}

// The mountpoints in this namespace, from mountinfo: a dead FUSE mount fails
// statfs with ENOTCONN but is still listed here.
bool listed_in_mountinfo(const std::string& path) {
  std::istringstream in(slurp("/proc/self/mountinfo"));
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string id, parent, dev, root, target;
    f >> id >> parent >> dev >> root >> target;
    if (target == path) return true;
  }
  return false;
}

// A temp dir standing in for /etc/pcifs and /run, with one view file; on
// destruction nothing it holds stays mounted.
class Scene {
 public:
  Scene() {
    char dir[] = "/tmp/pcifs-systemd-XXXXXX";
    root_ = mkdtemp(dir) ? dir : "";
    mkdir((root_ + "/etc").c_str(), 0755);
    mnt_ = root_ + "/run/c1";  // not there yet: ExecStartPre makes it
    std::ofstream(root_ + "/etc/c1.json")
        << R"({"mountpoint": ")" << mnt_ << R"(", "devices": ["0000:01:00.0", "0000:02:00.0"],
            "uid": 100000})";
  }
  ~Scene() {
    if (listed_in_mountinfo(mnt_)) {
      (void)std::system(("fusermount3 -u -z '" + mnt_ + "' 2>/dev/null").c_str());
    }
    (void)std::system(("rm -rf '" + root_ + "'").c_str());
  }
  Scene(const Scene&) = delete;
  Scene& operator=(const Scene&) = delete;

  // One line of the unit with this scene's paths, as systemd would expand it.
  std::string expand(const std::string& key) const {
    const std::string text = slurp(source_dir() + "/tools/systemd/pcifs@.service.in");
    std::istringstream in(text);
    std::string value;
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(key + "=", 0) == 0) value = line.substr(key.size() + 1);
    }
    replace_all(value, "@PCIFS_BINDIR@", abs_build_dir());
    replace_all(value, "/etc/pcifs/", root_ + "/etc/");
    replace_all(value, "%i", "c1");
    replace_all(value, "$$", "$");
    return value;
  }
  // ExecStart as argv: systemd splits at whitespace and drops a "$VAR" word
  // whose variable is unset (the unit's EnvironmentFile is optional).
  std::vector<std::string> exec_start() const {
    std::vector<std::string> argv;
    std::istringstream words(expand("ExecStart"));
    for (std::string w; words >> w;) {
      if (w[0] == '$') continue;
      argv.push_back(w);
    }
    return argv;
  }
  // An Exec line that is `/bin/sh -c '...'`: the shell parses its quoting as
  // systemd does. The "-" prefix (ignore failure) is the caller's business.
  int run_shell_line(const std::string& key, const std::string& env = "") const {
    std::string line = expand(key);
    if (!line.empty() && line[0] == '-') line.erase(0, 1);
    return std::system(
        (env + " /bin/sh -c " + shell_quote(line) + " >>" + log() + " 2>&1").c_str());
  }
  static std::string shell_quote(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  }
  const std::string& root() const { return root_; }
  const std::string& mnt() const { return mnt_; }
  std::string log() const { return root_ + "/daemon.log"; }

 private:
  std::string root_, mnt_;
};

// A datagram socket like systemd's notify socket: a path or, with '@', an
// abstract name.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& name) : name_(name) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, name.data(), name.size());
    if (name[0] == '@') a.sun_path[0] = '\0';
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() +
                                            (name[0] == '@' ? 0 : 1));
    bound_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) == 0;
  }
  ~NotifySocket() {
    if (fd_ >= 0) ::close(fd_);
    if (name_[0] == '/') unlink(name_.c_str());
  }
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;
  bool bound() const { return bound_; }
  const std::string& name() const { return name_; }
  // The next datagram, or nullopt after timeout_ms (0: only what is queued).
  std::optional<std::string> next(int timeout_ms) const {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return std::nullopt;
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0) return std::nullopt;
    return std::string(buf, static_cast<size_t>(n));
  }

 private:
  std::string name_;
  int fd_ = -1;
  bool bound_ = false;
};

// The daemon as ExecStart runs it, with NOTIFY_SOCKET set to `notify` (unset
// when empty) and everything else of this environment.
class Service {
 public:
  Service(const Scene& s, const std::string& notify) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      if (std::string(*e).rfind("NOTIFY_SOCKET=", 0) != 0) env.emplace_back(*e);
    }
    if (!notify.empty()) env.push_back("NOTIFY_SOCKET=" + notify);
    std::vector<std::string> args = s.exec_start();
    const int log = ::open(s.log().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      dup2(log, 1);
      dup2(log, 2);
      std::vector<char*> argv, envp;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      for (auto& e : env) envp.push_back(e.data());
      envp.push_back(nullptr);
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    if (log >= 0) ::close(log);
  }
  ~Service() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;
  // Sends sig and waits (bounded) for the exit; the wait status, or -1.
  int signal_and_wait(int sig) {
    ::kill(pid_, sig);
    int st = -1;
    const bool ended = eventually([&] { return waitpid(pid_, &st, WNOHANG) == pid_; });
    if (ended) pid_ = -1;
    return ended ? st : -1;
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

class SystemdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
    ASSERT_EQ(access((build_dir() + "/pcifs").c_str(), X_OK), 0) << "pcifs not built";
    ASSERT_FALSE(s_.exec_start().empty()) << "no ExecStart in the unit";
    // ExecStartPre creates the mountpoint the view names.
    ASSERT_EQ(s_.run_shell_line("ExecStartPre"), 0) << slurp(s_.log());
    struct stat st {};
    ASSERT_EQ(::stat(s_.mnt().c_str(), &st), 0) << "ExecStartPre did not create " << s_.mnt();
    ASSERT_TRUE(S_ISDIR(st.st_mode));
  }
  // Waits (bounded) for the mount without any notification.
  bool wait_mounted() {
    return eventually([&] { return list_dir(s_.mnt() + "/devices") == kViewDevices; });
  }
  // READY first, and at that moment the view is served; then SIGTERM gives
  // STOPPING and a clean exit with nothing left mounted.
  void expect_ready_then_stopping(const NotifySocket& sock) {
    Service svc(s_, sock.name());
    auto ready = sock.next(60'000);
    const std::set<std::string> listed = list_dir(s_.mnt() + "/devices");
    ASSERT_TRUE(ready) << "no READY=1 arrived\n" << slurp(s_.log());
    EXPECT_EQ(listed, kViewDevices) << "READY=1 came before the view was served";
    EXPECT_TRUE(ready->find("READY=1\n") == 0) << *ready;
    EXPECT_NE(ready->find("\nSTATUS=serving " + s_.mnt() + "\n"), std::string::npos) << *ready;
    EXPECT_FALSE(sock.next(0)) << "a second message before the stop";
    const int st = svc.signal_and_wait(SIGTERM);
    auto stopping = sock.next(10'000);
    ASSERT_TRUE(stopping) << "no STOPPING=1 arrived\n" << slurp(s_.log());
    EXPECT_EQ(*stopping, "STOPPING=1\n");
    EXPECT_FALSE(sock.next(0)) << "more after STOPPING=1";
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st << "\n"
                                                       << slurp(s_.log());
    EXPECT_FALSE(listed_in_mountinfo(s_.mnt())) << "still mounted after SIGTERM";
  }
  Scene s_;
};

TEST_F(SystemdTest, ReadyOnceServedStoppingOnTerm) {
  NotifySocket sock(s_.root() + "/notify");
  ASSERT_TRUE(sock.bound());
  expect_ready_then_stopping(sock);
}

TEST_F(SystemdTest, AbstractNotifySocket) {
  NotifySocket sock("@pcifs-systemd-test-" + std::to_string(getpid()));
  ASSERT_TRUE(sock.bound());
  expect_ready_then_stopping(sock);
}

// Control: the datagrams above came because of NOTIFY_SOCKET.
TEST_F(SystemdTest, WithoutNotifySocketNothingIsSentAndTheDaemonWorks) {
  NotifySocket sock(s_.root() + "/notify");
  ASSERT_TRUE(sock.bound());
  Service svc(s_, "");
  ASSERT_TRUE(wait_mounted()) << slurp(s_.log());
  EXPECT_EQ(read_text(s_.mnt() + "/devices/0000:01:00.0/vendor"), "0x1b36\n");
  const int st = svc.signal_and_wait(SIGTERM);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st << "\n" << slurp(s_.log());
  EXPECT_FALSE(sock.next(0)) << "a datagram arrived without NOTIFY_SOCKET";
  EXPECT_FALSE(listed_in_mountinfo(s_.mnt()));
}

// Failing to notify is logged, never fatal.
TEST_F(SystemdTest, UnreachableNotifySocketIsNotFatal) {
  Service svc(s_, s_.root() + "/no-such-socket");
  ASSERT_TRUE(wait_mounted()) << slurp(s_.log());
  const int st = svc.signal_and_wait(SIGTERM);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st << "\n" << slurp(s_.log());
  EXPECT_NE(slurp(s_.log()).find("cannot notify"), std::string::npos) << slurp(s_.log());
}

// A daemon that dies leaves a dead mount (ENOTCONN) that would fail the
// restart; ExecStopPost detaches it, and leaves a clean stop alone.
TEST_F(SystemdTest, ExecStopPostDetachesTheMountOfADeadDaemon) {
  {
    Service svc(s_, "");
    ASSERT_TRUE(wait_mounted()) << slurp(s_.log());
    const int st = svc.signal_and_wait(SIGKILL);
    ASSERT_TRUE(WIFSIGNALED(st)) << st;
  }
  // Control: the dead mount is there, so what removes it is ExecStopPost.
  ASSERT_TRUE(listed_in_mountinfo(s_.mnt()));
  EXPECT_EQ(s_.run_shell_line("ExecStopPost", "SERVICE_RESULT=signal"), 0) << slurp(s_.log());
  EXPECT_FALSE(listed_in_mountinfo(s_.mnt())) << slurp(s_.log());
  // After a clean stop there is nothing to do, and it says nothing.
  const size_t before = slurp(s_.log()).size();
  EXPECT_EQ(s_.run_shell_line("ExecStopPost", "SERVICE_RESULT=success"), 0);
  EXPECT_EQ(slurp(s_.log()).size(), before) << slurp(s_.log());
}

// Verifies the unit `file` (a source under tools/systemd/) installed as
// `unit` (e.g. pcifs@.service), naming `instance` (e.g. pcifs@c1.service).
void verify_unit(const std::string& file, const std::string& unit, const std::string& instance) {
  if (std::system("command -v systemd-analyze >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "systemd-analyze not installed";
  }
  char dir[] = "/tmp/pcifs-unit-XXXXXX";
  ASSERT_TRUE(mkdtemp(dir));
  const std::string d = dir;
  std::string text = slurp(source_dir() + "/tools/systemd/" + file);
  ASSERT_FALSE(text.empty());
  replace_all(text, "@PCIFS_BINDIR@", abs_build_dir());
  std::ofstream(d + "/" + unit) << text;
  const std::string out = d + "/verify.txt";
  const int rc = std::system(
      ("cd '" + d + "' && systemd-analyze verify ./" + instance + " >'" + out + "' 2>&1").c_str());
  const std::string said = slurp(out);
  // Control: the same check fails a unit with a misspelt key.
  replace_all(text, "Restart=on-failure", "Restartt=on-failure");
  std::ofstream(d + "/bad" + unit) << text;
  const int bad = std::system(
      ("cd '" + d + "' && systemd-analyze verify ./bad" + instance + " >'" + out + "' 2>&1")
          .c_str());
  const std::string bad_said = slurp(out);
  (void)std::system(("rm -rf '" + d + "'").c_str());
  EXPECT_EQ(rc, 0) << said;
  EXPECT_EQ(said.find(instance), std::string::npos) << said;
  EXPECT_NE(bad_said.find("Restartt"), std::string::npos) << "control: " << bad << "\n" << bad_said;
}

TEST(SystemdUnitTest, VerifiesWithSystemdAnalyze) {
  verify_unit("pcifs@.service.in", "pcifs@.service", "pcifs@c1.service");
}

TEST(SystemdUnitTest, HostUnitVerifiesWithSystemdAnalyze) {
  verify_unit("pcifs.service.in", "pcifs.service", "pcifs.service");
}

// pcifs.service's ExecStart, with its paths moved to a temp dir: READY=1 once
// the control socket answers (its STATUS names it), a view added at runtime
// is served, and SIGTERM gives STOPPING=1, a clean exit and nothing left.
TEST(SystemdHostUnitTest, ExecStartIsAHostDaemonThatNotifies) {
  if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
  char dir[] = "/tmp/pcifs-hostunit-XXXXXX";
  ASSERT_TRUE(mkdtemp(dir));
  const std::string d = dir;
  std::string text = slurp(source_dir() + "/tools/systemd/pcifs.service.in");
  std::string line;
  for (std::istringstream in(text); std::getline(in, line);) {
    if (line.rfind("ExecStart=", 0) == 0) break;
  }
  ASSERT_EQ(line.rfind("ExecStart=", 0), 0u) << text;
  replace_all(line, "@PCIFS_BINDIR@", abs_build_dir());
  replace_all(line, "/run/pcifs/control.sock", d + "/control.sock");
  replace_all(line, "/var/lib/pcifs/views", d + "/state");
  replace_all(line, "/var/run/cdi", d + "/cdi");
  std::vector<std::string> args;
  std::istringstream words(line.substr(std::strlen("ExecStart=")));
  for (std::string w; words >> w;) {
    if (w != "$PCIFS_ARGS") args.push_back(w);  // unset: systemd drops the word
  }
  args.push_back("--view-root=" + d + "/views");
  NotifySocket sock(d + "/notify");
  ASSERT_TRUE(sock.bound());
  const std::string log = d + "/log";
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    setenv("NOTIFY_SOCKET", sock.name().c_str(), 1);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  auto ready = sock.next(20000);
  ASSERT_TRUE(ready) << slurp(log);
  EXPECT_EQ(ready->rfind("READY=1\n", 0), 0u) << *ready;
  EXPECT_NE(ready->find("control " + d + "/control.sock"), std::string::npos) << *ready;
  TempFile view(R"({"name": "c1", "devices": ["0000:01:00.0"]})");
  const auto add = run_pcifs({"view", "add", view.path(), "--control=" + d + "/control.sock"});
  EXPECT_EQ(add.status, 0) << add.err << slurp(log);
  EXPECT_EQ(read_text(d + "/views/c1/devices/0000:01:00.0/vendor"), "0x1b36\n");
  ::kill(pid, SIGTERM);
  auto stopping = sock.next(20000);
  int st = -1;
  if (!eventually([&] { return waitpid(pid, &st, WNOHANG) == pid; })) {
    ::kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
  }
  EXPECT_EQ(stopping.value_or(""), "STOPPING=1\n");
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st << slurp(log);
  EXPECT_FALSE(listed_in_mountinfo(d + "/views/c1"));
  EXPECT_TRUE(std::ifstream(d + "/state/c1.json").good()) << "the state is kept";
  unmount_all_on(d + "/views/c1");
  (void)std::system(("rm -rf '" + d + "'").c_str());
}

}  // namespace
}  // namespace pcifs::testing
