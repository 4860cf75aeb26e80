// pcifs-kube's ResourceSlices end to end [issue 10, S16]: the real agent
// between a real host daemon on a sysfs-shaped tree (--backend=sysfs:DIR, so
// that IOMMU groups, bridges, NUMA nodes, bound drivers and hot-plug are the
// tree's) and a fake API server over HTTPS that records every request.
//
// The tree: bridge 00:1c.0 and endpoints 03:00.0 and 03:00.1 in IOMMU group
// 3; 04:00.0 alone in group 4 on NUMA node 1, unbound; 05:00.0 alone in group
// 5, bound to e1000e. Hot-plug is driven as the kernel would, with uevent
// datagrams to DIR/.pcifs-uevents (hotplug_test.cpp).
//
// Every "nothing was written" claim has a sync point: the agent publishes from
// one thread, one pass after the other, so a write a quiet pass made would
// come before the write of the next pass that the test waits for.
#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <set>
#include <sstream>

#include "fixtures/fake_apiserver.hpp"
#include "fixtures/kube_agent.hpp"
#include "fixtures/kubelet_harness.hpp"
#include "fixtures/mount_host.hpp"
#include "fixtures/sysfs_tree.hpp"

namespace pcifs::testing {
namespace {

using nlohmann::json;

constexpr const char* kNode = "node-a";
constexpr const char* kBridge = "0000:00:1c.0";   // group 3, a bridge: never a device
constexpr const char* kGroupA = "0000:03:00.0";   // group 3
constexpr const char* kGroupB = "0000:03:00.1";   // group 3
constexpr const char* kLone = "0000:04:00.0";     // group 4, NUMA node 1, unbound
constexpr const char* kBound = "0000:05:00.0";    // group 5, bound to e1000e
constexpr const char* kNew = "0000:06:00.0";      // group 6: arrives and leaves
constexpr const char* kBridge2 = "0000:00:1d.0";  // group 9: a bridge that arrives

const std::string kSlices = std::string(FakeApiServer::kApi) + "/resourceslices";

// A long bound for what the agent does after an event or a retry (a loaded
// machine); only a failing run waits that long.
bool settles(const std::function<bool()>& pred) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

FakeFunction endpoint(const std::string& bdf, uint16_t device, int group,
                      std::optional<std::string> driver = std::nullopt) {
  FakeFunction f;
  f.bdf = bdf;
  f.config = make_config(0x1AF4, device, 0x020000);
  f.driver = std::move(driver);
  f.iommu_group = group;
  return f;
}

// A type 1 header (PCI-to-PCI bridge, class 0x060400).
FakeFunction bridge(const std::string& bdf, int group) {
  FakeFunction f;
  f.bdf = bdf;
  f.config = make_config(0x8086, 0x7A38, 0x060400);
  f.config[PCI_HEADER_TYPE] = PCI_HEADER_TYPE_BRIDGE;
  f.iommu_group = group;
  return f;
}

std::string attr_string(const json& dev, const std::string& key) {
  const json a = dev.value("attributes", json::object()).value(key, json::object());
  return a.value("string", "<none>");
}
std::optional<int64_t> attr_int(const json& dev, const std::string& key) {
  const json a = dev.value("attributes", json::object()).value(key, json::object());
  if (!a.contains("int")) return std::nullopt;
  return a["int"].get<int64_t>();
}

bool is_write(const FakeApiServer::Request& r) {
  return r.path.rfind(kSlices, 0) == 0 &&
         (r.method == "POST" || r.method == "PUT" || r.method == "DELETE");
}
bool is_list(const FakeApiServer::Request& r) { return r.method == "GET" && r.path == kSlices; }

class KubeSlicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
    tree_.add(bridge(kBridge, 3));
    tree_.add(endpoint(kGroupA, 0xABC0, 3));
    tree_.add(endpoint(kGroupB, 0xABC1, 3));
    FakeFunction lone = endpoint(kLone, 0x0004, 4);
    lone.attrs["numa_node"] = "1\n";
    tree_.add(lone);
    tree_.add(endpoint(kBound, 0x0005, 5, "e1000e"));
    host_ =
        std::make_unique<HostDaemon>(std::vector<std::string>{"--backend=sysfs:" + tree_.root()});
    ASSERT_TRUE(host_->alive()) << host_->log();
    api_ = std::make_unique<FakeApiServer>();
  }
  void TearDown() override {
    if (agent_ && !agent_->alive()) ADD_FAILURE() << "the agent died during the test";
    if (host_ && !host_->alive()) ADD_FAILURE() << "the host daemon died during the test";
    if (HasFailure()) {
      if (agent_) std::cerr << "--- agent log\n" << agent_->log();
      if (host_) std::cerr << "--- daemon log\n" << host_->log();
      if (api_) {
        std::cerr << "--- API server requests\n";
        for (const auto& r : api_->requests()) std::cerr << r.method << " " << r.target << "\n";
      }
    }
    agent_.reset();  // before the daemon and the tree
    host_.reset();
  }

  void start_agent(std::vector<std::string> extra) {
    agent_ = std::make_unique<KubeAgent>(host_->sock(), *api_, kNode, std::move(extra));
  }

  // Waits for the agent's first two passes (the one at start, the one the
  // watch stream's connection pokes): the pool is published and the second
  // pass has read it back. From then on, with --resync=3600, only events
  // make the agent look again.
  void wait_started(size_t lists_before = 0) {
    ASSERT_TRUE(settles([&] { return lists() >= lists_before + 2 && !pool().empty(); }))
        << "the agent did not publish";
  }

  void plug(const FakeFunction& f) {
    tree_.add(f);
    ASSERT_EQ(tree_.announce("add", f.bdf), 0);
  }
  void unplug(const std::string& bdf) {
    tree_.remove(bdf);
    ASSERT_EQ(tree_.announce("remove", bdf), 0);
  }

  // This node's slices of driver pcifs.io, by name.
  std::map<std::string, json> pool() const {
    std::map<std::string, json> out;
    for (const auto& [name, s] : api_->slices()) {
      const json spec = s.value("spec", json::object());
      if (spec.value("driver", "") == "pcifs.io" && spec.value("nodeName", "") == kNode) {
        out[name] = s;
      }
    }
    return out;
  }
  // Every device of the pool, by name.
  std::map<std::string, json> devices() const {
    std::map<std::string, json> out;
    for (const auto& [name, s] : pool()) {
      for (const auto& d : s["spec"].value("devices", json::array())) {
        out[d.value("name", "")] = d;
      }
    }
    return out;
  }
  bool published(const std::string& device) const { return devices().count(device) == 1; }
  // The pool's generation (-1: no slices, or slices of different generations).
  int64_t generation() const {
    std::set<int64_t> g;
    for (const auto& [name, s] : pool()) g.insert(s["spec"]["pool"].value("generation", -1));
    return g.size() == 1 ? *g.begin() : -1;
  }
  size_t lists() const {
    size_t n = 0;
    for (const auto& r : api_->requests()) n += is_list(r) ? 1 : 0;
    return n;
  }
  // The writes among requests [from, end).
  std::vector<FakeApiServer::Request> writes_since(size_t from) const {
    std::vector<FakeApiServer::Request> out;
    const auto all = api_->requests();
    for (size_t i = from; i < all.size(); ++i) {
      if (is_write(all[i])) out.push_back(all[i]);
    }
    return out;
  }
  // "METHOD TARGET" of each request, one a line ("" for none).
  static std::string describe(const std::vector<FakeApiServer::Request>& rs) {
    std::string out;
    for (const auto& r : rs) out += r.method + " " + r.target + "\n";
    return out;
  }
  // The agent's debug log names an event about `bdf` that it republished on.
  bool agent_saw(const std::string& bdf) const {
    std::istringstream in(agent_->log());
    for (std::string line; std::getline(in, line);) {
      if (line.find("republishing") != std::string::npos && line.find(bdf) != std::string::npos) {
        return true;
      }
    }
    return false;
  }
  size_t lists_since(size_t from) const {
    size_t n = 0;
    const auto all = api_->requests();
    for (size_t i = from; i < all.size(); ++i) n += is_list(all[i]) ? 1 : 0;
    return n;
  }

  SysfsTree tree_;  // outlives the daemon (TearDown stops it first)
  std::unique_ptr<HostDaemon> host_;
  std::unique_ptr<FakeApiServer> api_;
  std::unique_ptr<KubeAgent> agent_;
};

TEST_F(KubeSlicesTest, PublishesTheNodesPoolAsTheSchedulerMustSeeIt) {
  start_agent({"--resync=3600"});
  wait_started();
  const auto slices = pool();
  ASSERT_EQ(slices.size(), 1u);
  for (const auto& [name, s] : slices) {
    EXPECT_EQ(name, "node-a-pcifs.io-0");
    EXPECT_EQ(s["apiVersion"], "resource.k8s.io/v1");
    EXPECT_EQ(s["kind"], "ResourceSlice");
    const json& spec = s["spec"];
    EXPECT_EQ(spec["driver"], "pcifs.io");
    EXPECT_EQ(spec["nodeName"], kNode);
    EXPECT_EQ(spec["pool"]["name"], kNode);
    EXPECT_GE(spec["pool"]["generation"].get<int64_t>(), 1);
    EXPECT_EQ(spec["pool"]["resourceSliceCount"], static_cast<int64_t>(slices.size()));
  }

  const auto devs = devices();
  std::set<std::string> names;
  for (const auto& [n, d] : devs) names.insert(n);
  // The group is one device; the bridge is none (not even a group of its own).
  EXPECT_EQ(names,
            (std::set<std::string>{"iommu-group-3", "pci-0000-04-00-0", "pci-0000-05-00-0"}));
  for (const auto& [n, d] : devs) {
    EXPECT_EQ(attr_string(d, "pcifs.io/bdfs").find(kBridge), std::string::npos) << d.dump();
    EXPECT_NE(attr_string(d, "resource.kubernetes.io/pciBusID"), kBridge) << d.dump();
  }

  const json& group = devs.at("iommu-group-3");
  EXPECT_EQ(attr_int(group, "pcifs.io/functions"), 2) << group.dump();
  EXPECT_EQ(attr_string(group, "pcifs.io/bdfs"), std::string(kGroupA) + "," + kGroupB);
  EXPECT_EQ(attr_string(group, "resource.kubernetes.io/pciBusID"), kGroupA);
  EXPECT_EQ(attr_string(group, "resource.kubernetes.io/pcieRoot"), "pci0000:00");
  EXPECT_EQ(attr_int(group, "pcifs.io/iommuGroup"), 3);
  EXPECT_EQ(attr_string(group, "pcifs.io/vendor"), "1af4");  // 4 lower-case hex digits
  EXPECT_EQ(attr_string(group, "pcifs.io/device"), "abc0");
  EXPECT_EQ(attr_string(group, "pcifs.io/class"), "020000");
  EXPECT_FALSE(attr_int(group, "pcifs.io/numaNode").has_value()) << "the tree says -1";
  EXPECT_EQ(attr_string(group, "pcifs.io/health"), "healthy");

  const json& lone = devs.at("pci-0000-04-00-0");
  EXPECT_EQ(attr_int(lone, "pcifs.io/functions"), 1) << lone.dump();
  EXPECT_EQ(attr_string(lone, "pcifs.io/bdfs"), kLone);
  EXPECT_EQ(attr_string(lone, "resource.kubernetes.io/pciBusID"), kLone);
  EXPECT_EQ(attr_int(lone, "pcifs.io/iommuGroup"), 4);
  EXPECT_EQ(attr_int(lone, "pcifs.io/numaNode"), 1);
  EXPECT_EQ(attr_string(lone, "pcifs.io/device"), "0004");
  EXPECT_EQ(attr_string(lone, "pcifs.io/driver"), "");
  EXPECT_EQ(attr_string(lone, "pcifs.io/health"), "healthy");
  EXPECT_EQ(attr_string(lone, "pcifs.io/healthDetail"), "ok");

  const json& bound = devs.at("pci-0000-05-00-0");
  EXPECT_EQ(attr_string(bound, "pcifs.io/driver"), "e1000e") << bound.dump();
  EXPECT_EQ(attr_string(bound, "pcifs.io/health"), "unhealthy");
  EXPECT_EQ(attr_string(bound, "pcifs.io/healthDetail"), std::string(kBound) + ": bound:e1000e");
  EXPECT_EQ(attr_int(bound, "pcifs.io/iommuGroup"), 5);

  // Every request carried the token; the list asked for this driver and node.
  for (const auto& r : api_->requests()) {
    EXPECT_EQ(r.authorization, "Bearer fake-token-1") << r.target;
    if (is_list(r)) {
      EXPECT_NE(r.query.find("spec.nodeName"), std::string::npos) << r.target;
      EXPECT_NE(r.query.find("spec.driver"), std::string::npos) << r.target;
    }
  }
}

TEST_F(KubeSlicesTest, HotPlugRepublishesWithTheGenerationBumpedAndNothingElseDoes) {
  start_agent({"--resync=3600"});
  wait_started();
  const int64_t g1 = generation();
  ASSERT_GE(g1, 1);
  const size_t mark = api_->requests().size();

  // A sync point that changes nothing: a bridge arrives (an event the agent
  // acts on, a pass that reads the pool) and is no device.
  plug(bridge(kBridge2, 9));
  ASSERT_TRUE(settles([&] { return lists_since(mark) >= 1 && agent_saw(kBridge2); }));
  EXPECT_EQ(generation(), g1);
  EXPECT_EQ(describe(writes_since(mark)), "") << "an event that changes no device wrote a slice";

  // An arrival: published with the generation bumped, by the event (with
  // --resync=3600 nothing else makes the agent look).
  plug(endpoint(kNew, 0x0006, 6));
  ASSERT_TRUE(settles([&] { return published("pci-0000-06-00-0"); }));
  const auto w = writes_since(mark);
  ASSERT_FALSE(w.empty());
  EXPECT_NE(w.front().body.find("pci-0000-06-00-0"), std::string::npos)
      << "the first write after the quiet event was not the arrival's: " << w.front().body;
  EXPECT_EQ(json::parse(w.front().body)["spec"]["pool"]["generation"], g1 + 1);
  const int64_t g2 = generation();
  EXPECT_GT(g2, g1);
  const json fresh = devices().at("pci-0000-06-00-0");
  EXPECT_EQ(attr_string(fresh, "pcifs.io/health"), "healthy") << fresh.dump();
  EXPECT_EQ(attr_int(fresh, "pcifs.io/iommuGroup"), 6);
  EXPECT_FALSE(published("pci-0000-00-1d-0"));
  EXPECT_EQ(devices().size(), 4u);

  // A removal: gone, generation bumped again; the rest as before.
  unplug(kNew);
  ASSERT_TRUE(settles([&] { return !published("pci-0000-06-00-0"); }));
  EXPECT_GT(generation(), g2);
  std::set<std::string> names;
  for (const auto& [n, d] : devices()) names.insert(n);
  EXPECT_EQ(names,
            (std::set<std::string>{"iommu-group-3", "pci-0000-04-00-0", "pci-0000-05-00-0"}));
}

TEST_F(KubeSlicesTest, ARestartedAgentConvergesWithoutWritesAndRecreatesADeletedSlice) {
  start_agent({"--resync=3600"});
  wait_started();
  const auto before = pool();
  ASSERT_EQ(before.size(), 1u);
  const std::string name = before.begin()->first;
  const std::string rv = before.begin()->second["metadata"]["resourceVersion"];
  const int64_t g1 = generation();

  const int st = agent_->stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "wait status " << st;
  EXPECT_EQ(pool(), before) << "stopping the agent must leave the slices in place";

  // Restarted (resync every second): several passes, none of them a write.
  agent_.reset();
  const size_t mark = api_->requests().size();
  start_agent({"--resync=1"});
  ASSERT_TRUE(settles([&] { return lists_since(mark) >= 3; }));
  EXPECT_EQ(describe(writes_since(mark)), "") << "a restart with nothing changed wrote";
  EXPECT_EQ(generation(), g1);
  EXPECT_EQ(pool().at(name)["metadata"]["resourceVersion"], rv);

  // Deleted behind its back: made again at the next resync, same devices.
  ASSERT_TRUE(api_->remove_slice(name));
  ASSERT_TRUE(settles([&] { return pool().count(name) == 1; }));
  const json again = pool().at(name);
  EXPECT_EQ(again["spec"]["devices"], before.at(name)["spec"]["devices"]);
  EXPECT_EQ(again["spec"]["pool"]["resourceSliceCount"], 1);
  EXPECT_GE(again["spec"]["pool"]["generation"].get<int64_t>(), 1);
}

TEST_F(KubeSlicesTest, AChangeWhileTheAgentWasDownIsPublishedAtItsRestart) {
  start_agent({"--resync=3600"});
  wait_started();
  const int64_t g1 = generation();
  agent_->stop(SIGTERM);
  agent_.reset();

  plug(endpoint(kNew, 0x0006, 6));
  ASSERT_TRUE(settles([&] {
    const json answer = ControlConn(host_->sock()).request(json{{"verb", "devices"}});
    if (!answer.is_object()) return false;
    for (const auto& d : answer.value("devices", json::array())) {
      if (d.value("bdf", "") == kNew) return true;
    }
    return false;
  })) << "the host daemon did not take the arrival";
  EXPECT_FALSE(published("pci-0000-06-00-0"));

  start_agent({"--resync=3600"});
  ASSERT_TRUE(settles([&] { return published("pci-0000-06-00-0"); }));
  EXPECT_EQ(generation(), g1 + 1);
}

TEST_F(KubeSlicesTest, AnApiServerThatFailsIsRetriedAndTheAgentKeepsServing) {
  start_agent({"--resync=3600", "--api-timeout=2000"});
  wait_started();
  const int64_t g1 = generation();
  const size_t mark = api_->requests().size();

  api_->fail_next(2, 500, kSlices);
  plug(endpoint(kNew, 0x0006, 6));
  ASSERT_TRUE(settles([&] { return published("pci-0000-06-00-0"); }));
  EXPECT_GT(generation(), g1);
  EXPECT_NE(agent_->log().find("ResourceSlices not published"), std::string::npos);
  // Both injected failures were answered: at least two requests before the
  // pass that published.
  size_t slice_requests = 0;
  const auto all = api_->requests();
  for (size_t i = mark; i < all.size(); ++i) {
    slice_requests += all[i].path.rfind(kSlices, 0) == 0 ? 1 : 0;
  }
  EXPECT_GE(slice_requests, 3u);

  // Still serving: the kubelet's side answers, and the next event publishes.
  ASSERT_TRUE(agent_->alive());
  pcifs::test::FakeKubelet kubelet;
  EXPECT_TRUE(kubelet.discover(agent_->registry())) << kubelet.last_error();
  const int64_t g2 = generation();
  unplug(kNew);
  ASSERT_TRUE(settles([&] { return !published("pci-0000-06-00-0"); }));
  EXPECT_GT(generation(), g2);
}

}  // namespace
}  // namespace pcifs::testing
