// Inventory: the node's functions as DRA devices and ResourceSlices.
#include "kube/inventory.hpp"

#include <gtest/gtest.h>

namespace pcifs::kube {
namespace {

using nlohmann::json;

json fn(const std::string& bdf, json group, const std::string& health = "ok", bool bridge = false) {
  return json{{"bdf", bdf},          {"vendor", "0x10DE"}, {"device", "0x2335"},
              {"class", "0x030200"}, {"bridge", bridge},   {"iommu_group", group},
              {"numa_node", 1},      {"driver", nullptr},  {"pcie_root", "pci0000:00"},
              {"health", health}};
}

std::vector<DraDevice> devices_of(const json& list) {
  std::string error;
  auto f = parse_host_devices(json{{"ok", true}, {"devices", list}}, &error);
  EXPECT_TRUE(f) << error;
  return f ? dra_devices(*f) : std::vector<DraDevice>{};
}

TEST(Inventory, AFunctionAloneInItsGroupIsOneDevice) {
  auto d = devices_of(json::array({fn("0000:01:00.0", 3), fn("0000:02:00.0", 4)}));
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].name, "pci-0000-01-00-0");
  EXPECT_EQ(d[0].bdfs, std::vector<std::string>{"0000:01:00.0"});
  const json& a = d[0].attributes;
  EXPECT_EQ(a["resource.kubernetes.io/pciBusID"], (json{{"string", "0000:01:00.0"}}));
  EXPECT_EQ(a["resource.kubernetes.io/pcieRoot"], (json{{"string", "pci0000:00"}}));
  EXPECT_EQ(a["pcifs.io/vendor"], (json{{"string", "10de"}}));
  EXPECT_EQ(a["pcifs.io/device"], (json{{"string", "2335"}}));
  EXPECT_EQ(a["pcifs.io/class"], (json{{"string", "030200"}}));
  EXPECT_EQ(a["pcifs.io/iommuGroup"], (json{{"int", 3}}));
  EXPECT_EQ(a["pcifs.io/numaNode"], (json{{"int", 1}}));
  EXPECT_EQ(a["pcifs.io/driver"], (json{{"string", ""}}));
  EXPECT_EQ(a["pcifs.io/health"], (json{{"string", "healthy"}}));
}

TEST(Inventory, AGroupOfSeveralEndpointsIsOneDeviceAndBridgesAreNone) {
  // Group 7: two endpoints and a bridge; the bridge is neither a device nor a member.
  auto d = devices_of(json::array({fn("0000:03:00.1", 7), fn("0000:00:1c.0", 7, "ok", true),
                                   fn("0000:03:00.0", 7), fn("0000:04:00.0", nullptr)}));
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].name, "iommu-group-7");
  EXPECT_EQ(d[0].bdfs, (std::vector<std::string>{"0000:03:00.0", "0000:03:00.1"}));
  EXPECT_EQ(d[0].attributes["pcifs.io/functions"], (json{{"int", 2}}));
  EXPECT_EQ(d[0].attributes["resource.kubernetes.io/pciBusID"], (json{{"string", "0000:03:00.0"}}));
  // No IOMMU group: alone, and no iommuGroup attribute.
  EXPECT_EQ(d[1].name, "pci-0000-04-00-0");
  EXPECT_FALSE(d[1].attributes.contains("pcifs.io/iommuGroup"));
  // Control: a group with ONE endpoint beside a bridge is that endpoint's device.
  auto one = devices_of(json::array({fn("0000:00:1c.0", 9, "ok", true), fn("0000:05:00.0", 9)}));
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].name, "pci-0000-05-00-0");
}

TEST(Inventory, UnhealthyWhenAnyEndpointIsHeldElsewhere) {
  auto d = devices_of(
      json::array({fn("0000:03:00.0", 7), fn("0000:03:00.1", 7, "bound:nvidia"),
                   fn("0000:06:00.0", 8, "low-power"), fn("0000:07:00.0", 9, "served-elsewhere")}));
  ASSERT_EQ(d.size(), 3u);
  EXPECT_FALSE(d[0].healthy);
  EXPECT_EQ(d[0].health_detail, "0000:03:00.1: bound:nvidia");
  EXPECT_EQ(d[0].attributes["pcifs.io/health"], (json{{"string", "unhealthy"}}));
  EXPECT_TRUE(d[1].healthy) << "a device in D3 is usable";
  EXPECT_FALSE(d[2].healthy);
}

TEST(Inventory, RootOnlyWhenAllEndpointsShareIt) {
  json a = fn("0000:03:00.0", 7), b = fn("0000:03:00.1", 7);
  b["pcie_root"] = "pci0000:80";
  auto d = devices_of(json::array({a, b}));
  ASSERT_EQ(d.size(), 1u);
  EXPECT_FALSE(d[0].attributes.contains("resource.kubernetes.io/pcieRoot"));
}

TEST(Inventory, MalformedAnswersAreErrorsNamingTheEntry) {
  std::string error;
  EXPECT_FALSE(parse_host_devices(json{{"ok", false}, {"error", "nope"}}, &error));
  EXPECT_NE(error.find("nope"), std::string::npos);
  json bad = fn("0000:01:00.0", 1);
  bad["vendor"] = "10de0";
  EXPECT_FALSE(parse_host_devices(json{{"ok", true}, {"devices", {bad}}}, &error));
  EXPECT_NE(error.find("devices[0] (0000:01:00.0)"), std::string::npos) << error;
  EXPECT_FALSE(parse_host_devices(json{{"ok", true}, {"devices", {{{"x", 1}}}}}, &error));
}

TEST(Inventory, SlicesCarryThePoolAndSplitAt128Devices) {
  std::vector<DraDevice> many;
  for (int i = 0; i < 130; ++i)
    many.push_back(DraDevice{"d" + std::to_string(i), {}, true, "ok", json::object()});
  auto s = resource_slices("node-a", 5, many);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0]["apiVersion"], "resource.k8s.io/v1");
  EXPECT_EQ(s[0]["kind"], "ResourceSlice");
  EXPECT_EQ(s[0]["metadata"]["name"], "node-a-pcifs.io-0");
  EXPECT_EQ(s[1]["metadata"]["name"], "node-a-pcifs.io-1");
  EXPECT_EQ(s[0]["spec"]["driver"], "pcifs.io");
  EXPECT_EQ(s[0]["spec"]["nodeName"], "node-a");
  EXPECT_EQ(s[0]["spec"]["pool"],
            (json{{"name", "node-a"}, {"generation", 5}, {"resourceSliceCount", 2}}));
  EXPECT_EQ(s[0]["spec"]["devices"].size(), 128u);
  EXPECT_EQ(s[1]["spec"]["devices"].size(), 2u);
  EXPECT_EQ(slice_devices(s).size(), 130u);
  // A node without devices still has its pool: one empty slice.
  auto none = resource_slices("node-a", 1, {});
  ASSERT_EQ(none.size(), 1u);
  EXPECT_TRUE(none[0]["spec"]["devices"].empty());
}

}  // namespace
}  // namespace pcifs::kube
