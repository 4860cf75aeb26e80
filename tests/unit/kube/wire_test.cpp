// Golden bytes for the kubelet's wire contract. Both ends of our own tests use
// our .proto files, so a wrong field number or type there would pass every
// round trip and still break against a real kubelet. Here the expected bytes
// are built by hand from the upstream definitions (k8s.io/kubelet
// pkg/apis/pluginregistration/v1/api.proto and pkg/apis/dra/v1/api.proto:
// the field numbers and wire types below are copied from them, not from our
// files), and compared with what the generated code writes and reads. The
// service and method names (the HTTP/2 path of every call) are checked too.
#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>

#include <cassert>
#include <string>

#include "dra_v1.grpc.pb.h"
#include "pluginregistration.grpc.pb.h"

namespace pcifs::kube {
namespace {

namespace dra = ::k8s::io::kubelet::pkg::apis::dra::v1;
namespace reg = ::pluginregistration;

// Protobuf wire types.
constexpr int kVarint = 0;
constexpr int kLen = 2;

// Upstream field numbers.
// pluginregistration: PluginInfo{type=1 name=2 endpoint=3 supported_versions=4},
// RegistrationStatus{plugin_registered=1 error=2}.
// dra/v1: NodePrepareResourcesRequest{claims=1}, NodePrepareResourcesResponse{
// claims=1 (map<string, NodePrepareResourceResponse>)},
// NodePrepareResourceResponse{devices=1 error=2}, Device{request_names=1
// pool_name=2 device_name=3 cdi_device_ids=4}, NodeUnprepareResourcesRequest{
// claims=1}, NodeUnprepareResourcesResponse{claims=1 (map)},
// NodeUnprepareResourceResponse{error=1}, Claim{namespace=1 uid=2 name=3}.
// A map field is a repeated message {key=1 value=2}.
constexpr int kMapKey = 1, kMapValue = 2;

// A field key (all our field numbers are below 16: one byte).
std::string key(int field, int wire_type) {
  assert(field > 0 && field < 16);
  return std::string(1, static_cast<char>(field << 3 | wire_type));
}
// A length-delimited field (string, bytes, message); short payloads only.
std::string len(int field, const std::string& payload) {
  assert(payload.size() < 128);
  return key(field, kLen) + static_cast<char>(payload.size()) + payload;
}
std::string varint(int field, unsigned char v) {
  assert(v < 128);
  return key(field, kVarint) + static_cast<char>(v);
}

template <class M>
std::string bytes_of(const M& m) {
  std::string out;
  EXPECT_TRUE(m.SerializeToString(&out));
  return out;
}

std::string hex(const std::string& s) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    out += d[c >> 4];
    out += d[c & 15];
    out += ' ';
  }
  return out;
}
#define EXPECT_BYTES(actual, expected) EXPECT_EQ(hex(actual), hex(expected))

TEST(WireTest, ClaimLiteralBytes) {
  // Written out byte by byte once, to show the helpers above are right.
  dra::Claim c;
  c.set_namespace_("ns");
  c.set_uid("u1");
  c.set_name("c");
  const std::string golden("\x0a\x02ns\x12\x02u1\x1a\x01\x63", 11);
  EXPECT_BYTES(bytes_of(c), golden);
  EXPECT_BYTES(golden, len(1, "ns") + len(2, "u1") + len(3, "c"));
}

TEST(WireTest, PrepareRequestFromTheKubeletParses) {
  const std::string claim1 = len(1, "default") + len(2, "uid-1") + len(3, "claim-a");
  const std::string claim2 = len(1, "team") + len(2, "uid-2") + len(3, "claim-b");
  const std::string wire = len(1, claim1) + len(1, claim2);

  dra::NodePrepareResourcesRequest req;
  ASSERT_TRUE(req.ParseFromString(wire));
  ASSERT_EQ(req.claims_size(), 2);
  EXPECT_EQ(req.claims(0).namespace_(), "default");
  EXPECT_EQ(req.claims(0).uid(), "uid-1");
  EXPECT_EQ(req.claims(0).name(), "claim-a");
  EXPECT_EQ(req.claims(1).namespace_(), "team");
  EXPECT_BYTES(bytes_of(req), wire);

  dra::NodeUnprepareResourcesRequest ureq;  // same shape, its own message
  ASSERT_TRUE(ureq.ParseFromString(wire));
  ASSERT_EQ(ureq.claims_size(), 2);
  EXPECT_EQ(ureq.claims(1).name(), "claim-b");
  EXPECT_BYTES(bytes_of(ureq), wire);
}

TEST(WireTest, PrepareResponseWithADevice) {
  dra::NodePrepareResourcesResponse resp;
  dra::NodePrepareResourceResponse& r = (*resp.mutable_claims())["uid-1"];
  dra::Device* d = r.add_devices();
  d->add_request_names("gpu");
  d->add_request_names("nic");
  d->set_pool_name("node-1");
  d->set_device_name("pci-0000-03-00-0");
  d->add_cdi_device_ids("pcifs.io/view=uid-1");

  const std::string device = len(1, "gpu") + len(1, "nic") + len(2, "node-1") +
                             len(3, "pci-0000-03-00-0") + len(4, "pcifs.io/view=uid-1");
  const std::string value = len(1, device);  // NodePrepareResourceResponse.devices
  const std::string entry = len(kMapKey, "uid-1") + len(kMapValue, value);
  const std::string wire = len(1, entry);
  EXPECT_BYTES(bytes_of(resp), wire);

  dra::NodePrepareResourcesResponse back;
  ASSERT_TRUE(back.ParseFromString(wire));
  ASSERT_EQ(back.claims().count("uid-1"), 1u);
  EXPECT_EQ(back.claims().at("uid-1").devices(0).cdi_device_ids(0), "pcifs.io/view=uid-1");
}

TEST(WireTest, PrepareResponseWithAnError) {
  dra::NodePrepareResourcesResponse resp;
  (*resp.mutable_claims())["uid-2"].set_error("no such device");
  const std::string value = len(2, "no such device");  // NodePrepareResourceResponse.error
  EXPECT_BYTES(bytes_of(resp), len(1, len(kMapKey, "uid-2") + len(kMapValue, value)));
}

TEST(WireTest, UnprepareResponse) {
  dra::NodeUnprepareResourcesResponse resp;
  (*resp.mutable_claims())["uid-3"].set_error("view busy");
  const std::string value = len(1, "view busy");  // NodeUnprepareResourceResponse.error
  EXPECT_BYTES(bytes_of(resp), len(1, len(kMapKey, "uid-3") + len(kMapValue, value)));
}

TEST(WireTest, PluginInfo) {
  reg::PluginInfo info;
  info.set_type("DRAPlugin");
  info.set_name("pcifs.io");
  info.set_endpoint("/var/lib/kubelet/plugins/pcifs.io/dra.sock");
  info.add_supported_versions("v1.DRAPlugin");
  EXPECT_BYTES(bytes_of(info), len(1, "DRAPlugin") + len(2, "pcifs.io") +
                                   len(3, "/var/lib/kubelet/plugins/pcifs.io/dra.sock") +
                                   len(4, "v1.DRAPlugin"));
}

TEST(WireTest, RegistrationStatusFromTheKubeletParses) {
  reg::RegistrationStatus st;
  ASSERT_TRUE(st.ParseFromString(varint(1, 1) + len(2, "version mismatch")));
  EXPECT_TRUE(st.plugin_registered());
  EXPECT_EQ(st.error(), "version mismatch");
  EXPECT_BYTES(bytes_of(st), varint(1, 1) + len(2, "version mismatch"));
  EXPECT_EQ(bytes_of(reg::InfoRequest()), "");
  EXPECT_EQ(bytes_of(reg::RegistrationStatusResponse()), "");
}

// gRPC calls /<package>.<Service>/<Method>, with these message types.
TEST(WireTest, ServiceAndMethodNames) {
  EXPECT_STREQ(dra::DRAPlugin::service_full_name(), "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin");
  EXPECT_STREQ(reg::Registration::service_full_name(), "pluginregistration.Registration");
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  struct Method {
    const char* service;
    const char* method;
    const char* in;
    const char* out;
  };
  const Method methods[] = {
      {"pluginregistration.Registration", "GetInfo", "pluginregistration.InfoRequest",
       "pluginregistration.PluginInfo"},
      {"pluginregistration.Registration", "NotifyRegistrationStatus",
       "pluginregistration.RegistrationStatus", "pluginregistration.RegistrationStatusResponse"},
      {"k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin", "NodePrepareResources",
       "k8s.io.kubelet.pkg.apis.dra.v1.NodePrepareResourcesRequest",
       "k8s.io.kubelet.pkg.apis.dra.v1.NodePrepareResourcesResponse"},
      {"k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin", "NodeUnprepareResources",
       "k8s.io.kubelet.pkg.apis.dra.v1.NodeUnprepareResourcesRequest",
       "k8s.io.kubelet.pkg.apis.dra.v1.NodeUnprepareResourcesResponse"},
  };
  for (const Method& m : methods) {
    SCOPED_TRACE(std::string(m.service) + "/" + m.method);
    const auto* s = pool->FindServiceByName(m.service);
    ASSERT_NE(s, nullptr);
    const auto* md = s->FindMethodByName(m.method);
    ASSERT_NE(md, nullptr);
    EXPECT_EQ(md->input_type()->full_name(), m.in);
    EXPECT_EQ(md->output_type()->full_name(), m.out);
    EXPECT_FALSE(md->client_streaming());
    EXPECT_FALSE(md->server_streaming());
  }
  EXPECT_EQ(pool->FindServiceByName("pluginregistration.Registration")->method_count(), 2);
  EXPECT_EQ(pool->FindServiceByName("k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin")->method_count(), 2);
}

}  // namespace
}  // namespace pcifs::kube
