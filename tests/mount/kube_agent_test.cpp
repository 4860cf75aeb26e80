// pcifs-kube end to end [issue 10, S16]: the real agent binary between a real
// host daemon (`pcifs --control`, the embedded default devices: 01:00.0 and
// 01:00.1 share IOMMU group 2) and the two components that cannot run here,
// played over their real protocols: a fake kubelet over gRPC on unix sockets
// (kubelet_harness.hpp) and a fake API server over HTTPS (fake_apiserver.hpp).
#include "fixtures/kube_agent.hpp"

#include <gtest/gtest.h>

#include <set>

#include "fixtures/fake_apiserver.hpp"
#include "fixtures/kube_claims.hpp"
#include "fixtures/kubelet_harness.hpp"
#include "fixtures/mount_host.hpp"

namespace pcifs::testing {
namespace {

using nlohmann::json;
using pcifs::kube::ClaimRef;
using pcifs::test::FakeKubelet;

const json* find_view(const json& ls, const std::string& name) {
  for (const auto& v : ls) {
    if (v.value("name", "") == name) return &v;
  }
  return nullptr;
}

std::set<std::string> listing(const std::string& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    out.insert(e.path().filename().string());
  }
  return out;
}

class KubeAgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!can_mount()) GTEST_SKIP() << "needs root and /dev/fuse";
    host_ = std::make_unique<HostDaemon>();
    ASSERT_TRUE(host_->alive()) << host_->log();
    api_ = std::make_unique<FakeApiServer>();
    agent_ =
        std::make_unique<KubeAgent>(host_->sock(), *api_, "node-a",
                                    std::vector<std::string>{"--api-timeout=2000"}, host_->cdi());
    ASSERT_TRUE(kubelet_.discover(agent_->registry())) << kubelet_.last_error() << agent_->log();
  }
  void TearDown() override {
    if (!HasFailure()) return;
    if (agent_) std::cerr << "--- agent log\n" << agent_->log();
    if (host_) std::cerr << "--- daemon log\n" << host_->log();
  }
  // A claim of 02:00.0, alone in its IOMMU group.
  static ClaimSpec lone(const std::string& uid_tail = "000000000001",
                        const std::string& name = "gpu") {
    ClaimSpec s;
    s.uid = "0f6c1f1e-1111-4a4a-9b9b-" + uid_tail;
    s.name = name;
    s.devices = {"pci-0000-02-00-0"};
    return s;
  }
  ClaimRef put(const ClaimSpec& s) {
    api_->put_claim(s.ns, s.name, make_claim(s));
    return ClaimRef{s.ns, s.uid, s.name};
  }
  std::string view_of(const ClaimRef& c) const { return "k8s-" + c.uid; }

  std::unique_ptr<HostDaemon> host_;
  std::unique_ptr<FakeApiServer> api_;
  std::unique_ptr<KubeAgent> agent_;
  FakeKubelet kubelet_;
};

TEST_F(KubeAgentTest, RegistersAsTheKubeletExpects) {
  EXPECT_EQ(kubelet_.info().type(), "DRAPlugin");
  EXPECT_EQ(kubelet_.info().name(), "pcifs.io");
  EXPECT_EQ(kubelet_.info().endpoint(), agent_->plugins() + "/pcifs.io/dra.sock");
  EXPECT_EQ(kubelet_.registration_socket(), agent_->registry() + "/pcifs.io-reg.sock");
  ASSERT_EQ(kubelet_.info().supported_versions_size(), 1);
  EXPECT_EQ(kubelet_.info().supported_versions(0), "v1.DRAPlugin");
  EXPECT_TRUE(eventually(
      [&] { return agent_->log().find("registered with the kubelet") != std::string::npos; }));
}

TEST_F(KubeAgentTest, PrepareMakesAViewOfExactlyTheClaimAndUnprepareRemovesIt) {
  ClaimSpec s;
  s.devices = {"iommu-group-2"};
  s.parameters =
      json{{"apiVersion", "pcifs.io/v1"}, {"kind", "ViewPolicy"}, {"config_write", false}};
  const ClaimRef c = put(s);
  auto r = kubelet_.prepare({c});
  ASSERT_TRUE(r.ok) << r.status;
  ASSERT_EQ(r.claims.count(c.uid), 1u);
  const auto& p = r.claims[c.uid];
  ASSERT_EQ(p.error, "");
  ASSERT_EQ(p.devices.size(), 1u);
  EXPECT_EQ(p.devices[0].device, "iommu-group-2");
  EXPECT_EQ(p.devices[0].pool, "node-a");
  EXPECT_EQ(p.devices[0].request_names, std::vector<std::string>{"pci"});
  EXPECT_EQ(p.devices[0].cdi_device_ids, std::vector<std::string>{"pcifs.io/view=" + view_of(c)});
  // The view: exactly the group's two functions, the claim's policy, a CDI spec.
  const json* v = find_view(host_->ls(), view_of(c));
  ASSERT_NE(v, nullptr) << host_->ls().dump();
  EXPECT_EQ(listing(host_->mnt(view_of(c)) + "/devices"),
            (std::set<std::string>{"0000:01:00.0", "0000:01:00.1"}));
  EXPECT_TRUE(std::filesystem::exists(host_->spec(view_of(c))));
  // Again (a kubelet restart): the same answer, nothing new.
  auto again = kubelet_.prepare({c});
  ASSERT_TRUE(again.ok);
  EXPECT_EQ(again.claims[c.uid].error, "");
  EXPECT_EQ(again.claims[c.uid].devices[0].cdi_device_ids, p.devices[0].cdi_device_ids);
  EXPECT_EQ(host_->ls().size(), 1u);

  auto u = kubelet_.unprepare({c});
  ASSERT_TRUE(u.ok) << u.status;
  EXPECT_EQ(u.claims[c.uid], "");
  EXPECT_EQ(find_view(host_->ls(), view_of(c)), nullptr);
  EXPECT_FALSE(std::filesystem::exists(host_->spec(view_of(c))));
  auto u2 = kubelet_.unprepare({c});
  ASSERT_TRUE(u2.ok);
  EXPECT_EQ(u2.claims[c.uid], "") << "a repeated Unprepare is done, not an error";
}

TEST_F(KubeAgentTest, ClaimsItCannotPrepareGetAnErrorAndItKeepsServing) {
  // Unknown to the API server.
  const ClaimRef ghost{"default", "0f6c1f1e-1111-4a4a-9b9b-00000000dead", "ghost"};
  auto r = kubelet_.prepare({ghost});
  ASSERT_TRUE(r.ok) << r.status;
  EXPECT_NE(r.claims[ghost.uid].error.find("cannot read claim default/ghost"), std::string::npos)
      << r.claims[ghost.uid].error;
  // Allocated to another node.
  ClaimSpec other;
  other.node = "node-b";
  other.uid = "0f6c1f1e-1111-4a4a-9b9b-000000000002";
  other.name = "elsewhere";
  const ClaimRef o = put(other);
  EXPECT_NE(kubelet_.prepare({o}).claims[o.uid].error.find("another node"), std::string::npos);
  // Another driver's claim.
  ClaimSpec gpu;
  gpu.uid = "0f6c1f1e-1111-4a4a-9b9b-000000000003";
  gpu.name = "gpu";
  json gc = make_claim(gpu);
  gc["status"]["allocation"]["devices"]["results"][0]["driver"] = "gpu.example.com";
  api_->put_claim(gpu.ns, gpu.name, gc);
  EXPECT_NE(kubelet_.prepare({ClaimRef{gpu.ns, gpu.uid, gpu.name}})
                .claims[gpu.uid]
                .error.find("no device of driver pcifs.io"),
            std::string::npos);
  // A device that does not exist, and an opaque config with an unknown field.
  ClaimSpec none;
  none.uid = "0f6c1f1e-1111-4a4a-9b9b-000000000004";
  none.name = "none";
  none.devices = {"pci-0000-7f-00-0"};
  const ClaimRef n = put(none);
  EXPECT_NE(kubelet_.prepare({n}).claims[n.uid].error.find("does not exist"), std::string::npos);
  ClaimSpec bad;
  bad.uid = "0f6c1f1e-1111-4a4a-9b9b-000000000005";
  bad.name = "bad";
  bad.parameters = json{{"config_write", "yes"}};
  const ClaimRef b = put(bad);
  const std::string be = kubelet_.prepare({b}).claims[b.uid].error;
  EXPECT_NE(be.find("config_write"), std::string::npos) << be;
  // Two claims in one pod.
  ClaimSpec two;
  two.uid = "0f6c1f1e-1111-4a4a-9b9b-000000000006";
  two.name = "two";
  two.devices = {"pci-0000-02-00-0"};
  ClaimSpec one;
  one.uid = "0f6c1f1e-1111-4a4a-9b9b-000000000007";
  one.name = "one";
  const ClaimRef t1 = put(one), t2 = put(two);
  auto both = kubelet_.prepare({t1, t2});
  EXPECT_NE(both.claims[t1.uid].error.find("one ResourceClaim"), std::string::npos);
  EXPECT_NE(both.claims[t2.uid].error.find("one ResourceClaim"), std::string::npos);
  EXPECT_TRUE(host_->ls().empty()) << "nothing was made for any of them";
  // The API server answers 500, then hangs past the agent's timeout (2 s).
  ClaimSpec good = lone("000000000008", "good");
  const ClaimRef g = put(good);
  api_->fail_next(1, 500, "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/good");
  const std::string e500 = kubelet_.prepare({g}).claims[g.uid].error;
  EXPECT_NE(e500.find("500"), std::string::npos) << e500;
  api_->hang("/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/good");
  const std::string etime = kubelet_.prepare({g}).claims[g.uid].error;
  api_->release_hang();
  EXPECT_FALSE(etime.empty());
  EXPECT_NE(etime.find("good"), std::string::npos) << etime;
  // And it still serves: the same claim now prepares.
  auto ok = kubelet_.prepare({g});
  ASSERT_TRUE(ok.ok);
  EXPECT_EQ(ok.claims[g.uid].error, "");
  EXPECT_NE(find_view(host_->ls(), view_of(g)), nullptr);
  EXPECT_TRUE(agent_->alive());
}

TEST_F(KubeAgentTest, AnAgentKilledBetweenPrepareAndUnprepareResumes) {
  ClaimSpec s = lone();
  const ClaimRef c = put(s);
  auto r = kubelet_.prepare({c});
  ASSERT_EQ(r.claims[c.uid].error, "");
  agent_->stop(SIGKILL);
  // The view lives on in the host daemon while the agent is away.
  EXPECT_NE(find_view(host_->ls(), view_of(c)), nullptr);
  api_->remove_claim(s.ns, s.name);  // the agent must not need it again
  agent_->start();
  FakeKubelet k2;
  ASSERT_TRUE(k2.discover(agent_->registry())) << k2.last_error() << agent_->log();
  auto again = k2.prepare({c});
  ASSERT_TRUE(again.ok) << again.status;
  EXPECT_EQ(again.claims[c.uid].error, "") << "answered from the checkpoint";
  EXPECT_EQ(again.claims[c.uid].devices[0].cdi_device_ids,
            r.claims[c.uid].devices[0].cdi_device_ids);
  auto u = k2.unprepare({c});
  EXPECT_EQ(u.claims[c.uid], "");
  EXPECT_EQ(find_view(host_->ls(), view_of(c)), nullptr);
  // Control: without the checkpoint a claim the API server no longer has
  // cannot be prepared.
  ClaimRef gone{"default", "0f6c1f1e-1111-4a4a-9b9b-0000000000ff", "gone"};
  EXPECT_FALSE(k2.prepare({gone}).claims[gone.uid].error.empty());
}

TEST_F(KubeAgentTest, AStoppedAgentLeavesViewsAndRemovesItsSockets) {
  const ClaimRef c = put(lone());
  ASSERT_EQ(kubelet_.prepare({c}).claims[c.uid].error, "");
  const int st = agent_->stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  EXPECT_FALSE(std::filesystem::exists(agent_->registry() + "/pcifs.io-reg.sock"));
  EXPECT_FALSE(std::filesystem::exists(agent_->plugins() + "/pcifs.io/dra.sock"));
  EXPECT_NE(find_view(host_->ls(), view_of(c)), nullptr) << "pods keep their /sys/bus/pci";
}

}  // namespace
}  // namespace pcifs::testing
