// pcifs-kube end to end, as a kubelet and a container runtime use it [issue
// 10]: a fake API server holds a ResourceClaim allocated the two functions of
// IOMMU group 2 (one DRA device, iommu-group-2); the fake kubelet prepares it
// over real gRPC through the real agent, which makes view k8s-<uid> in the real
// host daemon; the CDI device ID from the answer goes to real podman (with
// runc), as the kubelet hands it to the runtime, and the container sees
// exactly the claim's functions under /sys/bus/pci/devices and reads their
// config. After Unprepare the view, its mount and its CDI spec are gone and a
// container with that CDI ID does not start (the negative control of the
// first run).
//
// podman comes through tests/tools/podman_lib.sh, sourced by bash for every
// podman call: the same skip rules (podman_require: root, podman and runc
// installed, `podman info` works), the same offline test image (imported once
// under a lock, reused by every podman test) and the same run flags as the
// tool tests. podman 4.3 reads CDI specs only from /etc/cdi and /var/run/cdi,
// so the host daemon writes them to /var/run/cdi, as on a node; the claim's
// UID is random, so its view's CDI name is unique to this run. Every container
// is named after this run and removed at the end, and the daemon and the agent
// are stopped and their mounts removed, even when the test fails.
#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <random>
#include <sstream>

#include "fixtures/fake_apiserver.hpp"
#include "fixtures/kube_agent.hpp"
#include "fixtures/kube_claims.hpp"
#include "fixtures/kubelet_harness.hpp"
#include "fixtures/mount_host.hpp"

namespace pcifs::testing {
namespace {

using nlohmann::json;

constexpr const char* kCdiDir = "/var/run/cdi";
constexpr const char* kNamespace = "default";
constexpr const char* kClaim = "pcifs-podman";
// The default simulated set: IOMMU group 2 holds these two endpoints.
const std::vector<std::string> kGroup2 = {"0000:01:00.0", "0000:01:00.1"};

std::string source_dir() {
  if (const char* s = std::getenv("PCIFS_SOURCE_DIR")) return s;
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path().string();
}

// A random claim UID (the API server's shape: a version-4 UUID).
std::string random_uid() {
  std::random_device rd;
  std::mt19937_64 g((static_cast<uint64_t>(rd()) << 32) ^ rd());
  const char* hex = "0123456789abcdef";
  std::string u;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) u += '-';
    unsigned n = static_cast<unsigned>(g() & 15u);
    if (i == 12) n = 4;
    if (i == 16) n = 8 | (n & 3u);
    u += hex[n];
  }
  return u;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// A word as a shell would read it back (for the log).
std::string quoted(const std::string& a) {
  const bool plain = !a.empty() && a.find_first_not_of(
                                       "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                       "0123456789_./:=,@+%-") == std::string::npos;
  if (plain) return a;
  std::string q = "'";
  for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct Proc {
  int status = -1;  // exit status; 128+N when killed by signal N
  std::string out, err;
};

// podman_lib.sh's helpers from C++: bash sources the library, takes this
// run's container tag and counter, then runs `script` with `args` as "$@".
// Bounded: `timeout` ends bash (and podman under it) after `limit_s` seconds.
class Podman {
 public:
  // podman_require and podman_image; skip() says why podman cannot run here.
  Podman() {
    const Proc p = bash(
        "for t in lspci xxd; do command -v $t >/dev/null || "
        "{ echo \"SKIP: $t not installed\"; exit 77; }; done\n"
        "podman_require\n"
        "TMP=$(mktemp -d) || exit 1\n"
        "trap 'rm -rf \"$TMP\"' EXIT\n"
        "podman_image\n"
        "echo \"$PODMAN_TAG $IMAGE\"\n",
        {}, 360);
    if (p.status == 77) {
      skip_ = p.out + p.err;
      return;
    }
    std::istringstream in(p.out);
    in >> tag_ >> image_;
    if (p.status != 0 || image_.empty()) {
      error_ =
          "podman_require/podman_image exited " + std::to_string(p.status) + ": " + p.out + p.err;
      tag_.clear();
    }
  }
  ~Podman() { cleanup(); }
  Podman(const Podman&) = delete;
  Podman& operator=(const Podman&) = delete;

  const std::string& skip() const { return skip_; }
  const std::string& error() const { return error_; }
  const std::string& image() const { return image_; }

  // `podman run --rm` with podman_lib's flags and a name of this run; ARGS are
  // run's options, then the image and the command. Logged to stdout.
  Proc run(const std::vector<std::string>& args) {
    const Proc cmd =
        bash("echo \"${PODMAN[*]} ${PODMAN_RUN[*]} --name $PODMAN_TAG-$((PODMAN_N + 1))\"", {}, 10);
    std::string line = "$ " + trim(cmd.out);
    for (const auto& a : args) line += " " + quoted(a);
    std::cout << line << "\n";
    Proc p = bash("podman_run \"$@\"", args, 180);
    ++n_;  // podman_run named its container TAG-(n+1)
    std::cout << "exit status " << p.status << "\n" << p.out;
    if (!p.err.empty()) std::cout << "stderr: " << p.err;
    std::cout << std::flush;
    return p;
  }

  // Removes every container of this run, whatever state it was left in.
  void cleanup() {
    if (!tag_.empty()) bash("podman_cleanup", {}, 120);
  }

 private:
  Proc bash(const std::string& script, const std::vector<std::string>& args, int limit_s) {
    const std::string prelude =
        "set -u\n"
        "src=$1 tag=$2 n=$3\n"
        "shift 3\n"
        ". \"$src/tests/tools/podman_lib.sh\" || exit 1\n"
        "PODMAN_TAG=$tag PODMAN_N=$n\n";
    std::vector<std::string> argv = {
        "timeout", "-k",         "10", std::to_string(limit_s), "bash", "-c", prelude + script,
        "bash",    source_dir(), tag_, std::to_string(n_)};
    argv.insert(argv.end(), args.begin(), args.end());
    TempFile out("", ".out"), err("", ".err");
    const pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      ::signal(SIGPIPE, SIG_DFL);  // the fake API server ignores it for the process
      const int o = ::open(out.path().c_str(), O_WRONLY | O_TRUNC);
      const int e = ::open(err.path().c_str(), O_WRONLY | O_TRUNC);
      const int nul = ::open("/dev/null", O_RDONLY);
      dup2(nul, 0);
      dup2(o, 1);
      dup2(e, 2);
      std::vector<char*> v;
      for (auto& a : argv) v.push_back(a.data());
      v.push_back(nullptr);
      execvp(v[0], v.data());
      _exit(127);
    }
    Proc p;
    int st = 0;
    if (pid > 0 && waitpid(pid, &st, 0) == pid) {
      p.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    p.out = slurp(out.path());
    p.err = slurp(err.path());
    return p;
  }

  std::string tag_, image_, skip_, error_;
  int n_ = 0;
};

// Removes a CDI spec left in the shared /var/run/cdi when the daemon could
// not (killed, or the test failed before Unprepare).
struct SpecGuard {
  std::string path;
  ~SpecGuard() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

const json* find_view(const json& ls, const std::string& name) {
  for (const auto& v : ls) {
    if (v.value("name", "") == name) return &v;
  }
  return nullptr;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// The section of `out` after the line "== NAME", up to the next "== " line.
std::vector<std::string> section(const std::string& out, const std::string& name) {
  std::vector<std::string> s;
  bool in = false;
  for (const auto& l : lines_of(out)) {
    if (l.rfind("== ", 0) == 0) {
      in = l == "== " + name;
      continue;
    }
    if (in) s.push_back(l);
  }
  return s;
}

// "0x8086" -> "8680": the ID as config space holds it (little-endian hex).
std::string le16(const std::string& id) {
  return id.size() == 6 ? id.substr(4, 2) + id.substr(2, 2) : "?" + id;
}

// What the container runs: its devices, then each one's IDs from sysfs and the
// first 8 bytes of its config, then lspci on the sysfs method (no fallback to
// the host's /proc/bus/pci).
constexpr const char* kContainerScript =
    "echo '== ls'; ls /sys/bus/pci/devices\n"
    "echo '== config'\n"
    "for d in /sys/bus/pci/devices/*; do\n"
    "  echo \"${d##*/} $(cat $d/vendor) $(cat $d/device) $(cat $d/class) "
    "$(xxd -p -l 8 $d/config)\"\n"
    "done\n"
    "echo '== lspci'; lspci -n -A linux-sysfs\n";

TEST(KubePodman, PreparedClaimIsTheContainersDevicesUntilUnprepared) {
  if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
  Podman podman;
  if (!podman.skip().empty()) GTEST_SKIP() << podman.skip();
  ASSERT_TRUE(podman.error().empty()) << podman.error();
  std::cout << "image: " << podman.image() << std::endl;

  const std::string uid = random_uid();
  const std::string view = "k8s-" + uid;
  const std::string cdi_id = "pcifs.io/view=" + view;
  // Destroyed in reverse: containers first, then the agent, the daemon (its
  // clean stop removes its specs and mounts), then any spec it left.
  SpecGuard spec{std::string(kCdiDir) + "/pcifs.io-view_" + view + ".json"};
  FakeApiServer api;
  HostDaemon host({}, kCdiDir);
  ASSERT_TRUE(host.alive()) << host.log();
  ASSERT_EQ(host.spec(view), spec.path);
  KubeAgent agent(host.sock(), api);
  struct ContainersLast {
    Podman& p;
    ~ContainersLast() { p.cleanup(); }
  } containers{podman};
  auto logs = [&] {
    return "\n--- agent log:\n" + agent.log() + "\n--- daemon log:\n" + host.log();
  };

  test::FakeKubelet kubelet;
  ASSERT_TRUE(kubelet.discover(agent.registry())) << kubelet.last_error() << logs();

  ClaimSpec cs;
  cs.ns = kNamespace;
  cs.name = kClaim;
  cs.uid = uid;
  cs.node = agent.node();
  cs.devices = {"iommu-group-2"};
  api.put_claim(kNamespace, kClaim, make_claim(cs));
  const kube::ClaimRef ref{kNamespace, uid, kClaim};

  // --- NodePrepareResources: one device, the view's CDI ID.
  const test::KubeletPrepare prep = kubelet.prepare({ref});
  ASSERT_TRUE(prep.ok) << prep.status << logs();
  ASSERT_EQ(prep.claims.count(uid), 1u) << logs();
  const kube::PrepareResult& res = prep.claims.at(uid);
  ASSERT_EQ(res.error, "") << logs();
  ASSERT_EQ(res.devices.size(), 1u) << logs();
  EXPECT_EQ(res.devices[0].pool, agent.node());
  EXPECT_EQ(res.devices[0].device, "iommu-group-2");
  ASSERT_EQ(res.devices[0].cdi_device_ids, std::vector<std::string>{cdi_id}) << logs();
  std::cout << "NodePrepareResources: " << uid << " -> " << res.devices[0].cdi_device_ids[0]
            << std::endl;

  // The host side: the view holds exactly the group, its spec is where
  // podman reads specs. Its IDs, read through the view on the host, are what
  // the container must read too.
  const json ls = host.ls();
  const json* v = find_view(ls, view);
  ASSERT_NE(v, nullptr) << ls.dump() << logs();
  EXPECT_EQ((*v)["devices"], json(kGroup2));
  ASSERT_TRUE(std::filesystem::exists(spec.path)) << logs();
  std::map<std::string, std::string> vendor, device;
  for (const auto& bdf : kGroup2) {
    const std::string dir = host.mnt(view) + "/devices/" + bdf;
    vendor[bdf] = trim(slurp(dir + "/vendor"));
    device[bdf] = trim(slurp(dir + "/device"));
    ASSERT_EQ(vendor[bdf].size(), 6u) << dir << ": vendor '" << vendor[bdf] << "'";
    ASSERT_EQ(device[bdf].size(), 6u) << dir << ": device '" << device[bdf] << "'";
  }

  // --- the runtime: the container sees the claim's functions, nothing else.
  const Proc run = podman.run({"--device", cdi_id, podman.image(), "sh", "-c", kContainerScript});
  ASSERT_EQ(run.status, 0) << run.err << logs();
  EXPECT_EQ(section(run.out, "ls"), kGroup2) << run.out;
  const auto cfg = section(run.out, "config");
  ASSERT_EQ(cfg.size(), kGroup2.size()) << run.out;
  for (size_t i = 0; i < cfg.size(); ++i) {
    const std::string& bdf = kGroup2[i];
    std::istringstream in(cfg[i]);
    std::string b, ven, dev, cls, bytes;
    in >> b >> ven >> dev >> cls >> bytes;
    EXPECT_EQ(b, bdf) << cfg[i];
    EXPECT_EQ(ven, vendor[bdf]) << cfg[i];
    EXPECT_EQ(dev, device[bdf]) << cfg[i];
    // Config space from offset 0: vendor ID, device ID (little-endian).
    EXPECT_EQ(bytes.substr(0, 8), le16(vendor[bdf]) + le16(device[bdf])) << cfg[i];
    EXPECT_EQ(bytes.size(), 16u) << cfg[i];
  }
  std::vector<std::string> lspci;
  for (const auto& l : section(run.out, "lspci")) lspci.push_back(l.substr(0, l.find(' ')));
  EXPECT_EQ(lspci, (std::vector<std::string>{"01:00.0", "01:00.1"})) << run.out;

  // --- NodeUnprepareResources: the view, its mount and its spec are gone.
  const test::KubeletUnprepare un = kubelet.unprepare({ref});
  ASSERT_TRUE(un.ok) << un.status << logs();
  ASSERT_EQ(un.claims.count(uid), 1u) << logs();
  EXPECT_EQ(un.claims.at(uid), "") << logs();
  EXPECT_EQ(find_view(host.ls(), view), nullptr) << host.ls().dump();
  EXPECT_FALSE(std::filesystem::exists(spec.path)) << spec.path << " outlived Unprepare";
  EXPECT_EQ(proc_mounts_on(host.mnt(view)), 0) << "the view's mount outlived Unprepare";
  std::cout << "after NodeUnprepareResources: view " << view
            << " listed: " << (find_view(host.ls(), view) ? "yes" : "no") << "; spec " << spec.path
            << ": " << (std::filesystem::exists(spec.path) ? "present" : "gone") << std::endl;

  // --- the same CDI ID no longer starts a container.
  const Proc after = podman.run({"--device", cdi_id, podman.image(), "ls", "/sys/bus/pci/devices"});
  EXPECT_NE(after.status, 0) << "a container started with the unprepared claim's view\n"
                             << after.out;
  EXPECT_NE(after.status, 124) << "podman hung on the removed view";
  EXPECT_NE(after.err.find("unresolvable CDI devices " + cdi_id), std::string::npos)
      << "podman's error does not name the unresolvable device: " << after.err;

  EXPECT_TRUE(agent.alive()) << logs();
  EXPECT_TRUE(host.alive()) << logs();
}

}  // namespace
}  // namespace pcifs::testing
