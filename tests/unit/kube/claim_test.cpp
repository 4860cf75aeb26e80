// Claims: what a ResourceClaim must be for this node, and its view policy.
#include "kube/claim.hpp"

#include <gtest/gtest.h>

#include "fixtures/kube_claims.hpp"

namespace pcifs::kube {
namespace {

using nlohmann::json;
using testing::ClaimSpec;
using testing::make_claim;

ClaimRef ref_of(const ClaimSpec& s) { return ClaimRef{s.ns, s.uid, s.name}; }

TEST(Claim, AllocatedForThisNodeGivesItsDevicesAndPolicy) {
  ClaimSpec s;
  s.devices = {"pci-0000-01-00-0", "iommu-group-7"};
  s.parameters = json{{"apiVersion", "pcifs.io/v1"},
                      {"kind", "ViewPolicy"},
                      {"config_write", false},
                      {"uid", 1000},
                      {"gid", 1000},
                      {"hide", {"dsn"}}};
  std::string error;
  auto p = plan_claim(make_claim(s), ref_of(s), "node-a", &error);
  ASSERT_TRUE(p) << error;
  ASSERT_EQ(p->devices.size(), 2u);
  EXPECT_EQ(p->devices[1].device, "iommu-group-7");
  EXPECT_EQ(p->devices[1].request, "pci");
  EXPECT_EQ(p->devices[1].pool, "node-a");
  EXPECT_EQ(p->policy,
            (json{{"config_write", false}, {"uid", 1000}, {"gid", 1000}, {"hide", {"dsn"}}}));
}

TEST(Claim, AnotherNodeOrDriverOrUidIsRefused) {
  ClaimSpec s;
  std::string error;
  // Control: the same claim passes on its own node.
  ASSERT_TRUE(plan_claim(make_claim(s), ref_of(s), "node-a", &error)) << error;
  auto other = plan_claim(make_claim(s), ref_of(s), "node-b", &error);
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error(), Errno(EXDEV));
  EXPECT_NE(error.find("another node"), std::string::npos) << error;
  // Only another driver's device allocated.
  json c = make_claim(s);
  c["status"]["allocation"]["devices"]["results"][0]["driver"] = "gpu.example.com";
  auto none = plan_claim(c, ref_of(s), "node-a", &error);
  ASSERT_FALSE(none);
  EXPECT_NE(error.find("no device of driver pcifs.io"), std::string::npos) << error;
  // A claim deleted and created again under the same name: another UID.
  ClaimRef stale = ref_of(s);
  stale.uid = "ffffffff-0000-0000-0000-000000000000";
  auto s2 = plan_claim(make_claim(s), stale, "node-a", &error);
  ASSERT_FALSE(s2);
  EXPECT_EQ(s2.error(), Errno(ESTALE));
  // Not allocated (yet).
  ClaimSpec un = s;
  un.allocated = false;
  EXPECT_FALSE(plan_claim(make_claim(un), ref_of(un), "node-a", &error));
  EXPECT_NE(error.find("not allocated"), std::string::npos);
  // A result from another pool, with no nodeSelector to tell.
  json p = make_claim(s);
  p["status"]["allocation"].erase("nodeSelector");
  p["status"]["allocation"]["devices"]["results"][0]["pool"] = "node-b";
  EXPECT_FALSE(plan_claim(p, ref_of(s), "node-a", &error));
  EXPECT_NE(error.find("pool node-b"), std::string::npos) << error;
}

TEST(Claim, OpaqueConfigIsCheckedFieldByField) {
  struct Case {
    json params;
    std::string names;
  };
  const Case cases[] = {
      {json{{"colour", "red"}}, "colour: unknown field"},
      {json{{"config_read", 7}}, "config_read"},
      {json{{"config_read", "some"}}, "config_read"},
      {json{{"uid", "root"}}, "uid"},
      {json{{"allow_dma", true}}, "allow_dma: not allowed in a claim"},
      {json{{"share_iommu_group", true}}, "share_iommu_group: not allowed"},
      {json{{"devices", {"0000:09:00.0"}}}, "devices: not allowed in a claim"},
      {json{{"mountpoint", "/etc"}}, "mountpoint: not allowed"},
      {json{{"apiVersion", "pcifs.io/v2"}}, "apiVersion"},
      {json{{"kind", "Gpu"}}, "kind"},
      {json::array(), "expected an object"},
  };
  for (const auto& c : cases) {
    ClaimSpec s;
    s.parameters = c.params;
    std::string error;
    auto p = plan_claim(make_claim(s), ref_of(s), "node-a", &error);
    EXPECT_FALSE(p) << c.params.dump();
    EXPECT_NE(error.find(c.names), std::string::npos) << c.params.dump() << " -> " << error;
    EXPECT_NE(error.find("claim default/gpu"), std::string::npos) << error;
  }
  // Control: every allowed field with a valid value passes.
  ClaimSpec ok;
  ok.parameters = json{{"config_read", "header"},
                       {"config_write", false},
                       {"bar_access", false},
                       {"doe_protocols", {"0001:00"}},
                       {"mask_addresses", true},
                       {"hide", json::array()},
                       {"low_power_access", "wake"},
                       {"uid", 1},
                       {"gid", 2}};
  std::string error;
  EXPECT_TRUE(plan_claim(make_claim(ok), ref_of(ok), "node-a", &error)) << error;
}

TEST(Claim, ConfigsMergeInOrderAndOnlyForOurRequests) {
  ClaimSpec s;
  json c = make_claim(s);
  json& cfg = c["status"]["allocation"]["devices"]["config"];
  cfg = json::array(
      {json{{"source", "FromClass"},
            {"opaque",
             {{"driver", "pcifs.io"}, {"parameters", {{"config_write", false}, {"uid", 5}}}}}},
       json{{"source", "FromClaim"},
            {"requests", {"other"}},
            {"opaque", {{"driver", "pcifs.io"}, {"parameters", {{"uid", 6}}}}}},
       json{{"source", "FromClaim"},
            {"opaque", {{"driver", "gpu.example.com"}, {"parameters", {{"anything", 1}}}}}},
       json{{"source", "FromClaim"},
            {"requests", {"pci"}},
            {"opaque", {{"driver", "pcifs.io"}, {"parameters", {{"uid", 7}}}}}}});
  std::string error;
  auto p = plan_claim(c, ref_of(s), "node-a", &error);
  ASSERT_TRUE(p) << error;
  EXPECT_EQ(p->policy, (json{{"config_write", false}, {"uid", 7}}));
}

TEST(Claim, ViewNamedAfterTheClaimUid) {
  EXPECT_EQ(view_name_for("0f6c1f1e-1111-4a4a-9b9b-000000000001"),
            "k8s-0f6c1f1e-1111-4a4a-9b9b-000000000001");
}

}  // namespace
}  // namespace pcifs::kube
