// The API server client against the fake API server (HTTPS, real TLS with
// its own CA, a bearer token): each errno of the contract in api_client.hpp,
// with a control that shows the same request succeeds when the fault is not
// there. Faults come from the fake's gates (fail_next, hang), never timing.
#include "kube/api_client.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fixtures/fake_apiserver.hpp"

namespace pcifs::kube {
namespace {

using nlohmann::json;
using testing::FakeApiServer;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr const char* kDriver = "pcifs.io";

json claim(const std::string& ns, const std::string& name) {
  json c = json::parse(R"({
    "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
    "status": {"allocation": {"devices": {"results": [
      {"request": "r0", "driver": "pcifs.io", "pool": "n1", "device": "d0"}]}}}})");
  c["metadata"] = {{"namespace", ns}, {"name", name}, {"uid", "uid-" + name}};
  return c;
}

json slice(const std::string& driver, const std::string& node, const std::string& name = "",
           const std::string& generate_name = "") {
  json md = json::object();
  if (!name.empty()) md["name"] = name;
  if (!generate_name.empty()) md["generateName"] = generate_name;
  return {{"metadata", md},
          {"spec",
           {{"driver", driver},
            {"nodeName", node},
            {"pool", {{"name", node}, {"generation", 1}, {"resourceSliceCount", 1}}},
            {"devices", json::array()}}}};
}

class ApiClientTest : public ::testing::Test {
 protected:
  FakeApiServer api;
  ApiClient client{api.config()};
  std::string err;
};

// --- get_claim and the errno of each failure.

TEST_F(ApiClientTest, GetClaimReturnsTheStoredObject) {
  api.put_claim("default", "c1", claim("default", "c1"));
  auto r = client.get_claim("default", "c1", &err);
  ASSERT_TRUE(r.ok()) << err;
  EXPECT_EQ(*r, claim("default", "c1"));
  auto reqs = api.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].method, "GET");
  EXPECT_EQ(reqs[0].path, "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/c1");
  EXPECT_EQ(reqs[0].authorization, "Bearer fake-token-1");
}

TEST_F(ApiClientTest, MissingClaimIsEnoentWithTheServersMessage) {
  auto r = client.get_claim("default", "nope", &err);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(ENOENT));
  EXPECT_THAT(err, HasSubstr(api.url() + "/apis/resource.k8s.io/v1/namespaces/default/"
                                         "resourceclaims/nope"));
  EXPECT_THAT(err, HasSubstr("HTTP 404"));
  EXPECT_THAT(err, HasSubstr("resourceclaims.resource.k8s.io \"nope\" not found"));
  // Control: once the claim exists, the same request finds it.
  api.put_claim("default", "nope", claim("default", "nope"));
  EXPECT_TRUE(client.get_claim("default", "nope", &err).ok()) << err;
}

TEST_F(ApiClientTest, WrongTokenIsEacces) {
  api.put_claim("default", "c1", claim("default", "c1"));
  api.write_token_file("not-the-token\n");
  auto r = client.get_claim("default", "c1", &err);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EACCES));
  EXPECT_THAT(err, HasSubstr("HTTP 401"));
  EXPECT_THAT(err, HasSubstr("Unauthorized"));
  api.write_token_file("fake-token-1\n");  // control: the right token passes
  EXPECT_TRUE(client.get_claim("default", "c1", &err).ok()) << err;
}

TEST_F(ApiClientTest, TokenFileIsReadAgainAtEveryRequest) {
  api.put_claim("default", "c1", claim("default", "c1"));
  ASSERT_TRUE(client.get_claim("default", "c1", &err).ok()) << err;
  // The kubelet rotates the projected token: file and server change together.
  api.rotate_token("token-2");
  ASSERT_TRUE(client.get_claim("default", "c1", &err).ok()) << err;
  // Surrounding whitespace is not part of the token.
  api.write_token_file("  token-2 \n\n");
  ASSERT_TRUE(client.get_claim("default", "c1", &err).ok()) << err;
  // A stale token in the file is sent as read (a cached token would pass).
  api.write_token_file("token-1-stale");
  auto r = client.get_claim("default", "c1", &err);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EACCES));
  auto reqs = api.requests();
  ASSERT_EQ(reqs.size(), 4u);
  EXPECT_EQ(reqs[0].authorization, "Bearer fake-token-1");
  EXPECT_EQ(reqs[1].authorization, "Bearer token-2");
  EXPECT_EQ(reqs[2].authorization, "Bearer token-2");
  EXPECT_EQ(reqs[3].authorization, "Bearer token-1-stale");
}

TEST_F(ApiClientTest, UnreadableTokenFileIsEaccesWithoutARequest) {
  auto cfg = api.config();
  cfg.token_file = api.dir() + "/no-such-token";
  ApiClient c(cfg);
  auto r = c.get_claim("default", "c1", &err);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EACCES));
  EXPECT_THAT(err, HasSubstr("no-such-token"));
  EXPECT_TRUE(api.requests().empty());
  // No token file configured: no Authorization header at all (and a 401 here).
  cfg.token_file.clear();
  ApiClient anonymous(cfg);
  EXPECT_EQ(anonymous.get_claim("default", "c1", &err).error(), Errno(EACCES));
  ASSERT_EQ(api.requests().size(), 1u);
  EXPECT_EQ(api.requests()[0].authorization, "");
}

TEST_F(ApiClientTest, ServerErrorIsEioNamingTheStatus) {
  api.put_claim("default", "c1", claim("default", "c1"));
  api.fail_next(1, 500);
  auto r = client.get_claim("default", "c1", &err);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EIO));
  EXPECT_THAT(err, HasSubstr("HTTP 500"));
  EXPECT_THAT(err, HasSubstr("injected failure"));
  EXPECT_THAT(err, StartsWith("GET " + api.url()));
  // Control: only the next request failed.
  EXPECT_TRUE(client.get_claim("default", "c1", &err).ok()) << err;
}

TEST_F(ApiClientTest, InjectedFailureMatchesItsPathPrefixOnly) {
  api.put_claim("default", "c1", claim("default", "c1"));
  api.fail_next(1, 503, "/apis/resource.k8s.io/v1/resourceslices");
  EXPECT_TRUE(client.get_claim("default", "c1", &err).ok()) << err;
  auto r = client.list_slices(kDriver, "n1", &err);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EIO));
  EXPECT_THAT(err, HasSubstr("HTTP 503"));
  EXPECT_TRUE(client.list_slices(kDriver, "n1", &err).ok()) << err;
}

TEST_F(ApiClientTest, EachStatusHasItsErrno) {
  api.put_claim("default", "c1", claim("default", "c1"));
  const std::pair<int, int> table[] = {{400, EINVAL}, {403, EACCES}, {404, ENOENT},
                                       {409, EEXIST}, {422, EINVAL}, {429, EAGAIN},
                                       {502, EIO},    {504, EIO},    {418, EIO}};
  for (auto [status, e] : table) {
    api.fail_next(1, status);
    auto r = client.get_claim("default", "c1", &err);
    ASSERT_FALSE(r.ok()) << status;
    EXPECT_EQ(r.error(), Errno(e)) << status << ": " << err;
    EXPECT_THAT(err, HasSubstr("HTTP " + std::to_string(status)));
  }
  // A status without a Status object: the sentence still names the status.
  api.reply_next(1, 502, "<html>bad gateway</html>", "text/html");
  auto r = client.get_claim("default", "c1", &err);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EIO));
  EXPECT_THAT(err, HasSubstr("HTTP 502"));
  EXPECT_THAT(err, ::testing::Not(HasSubstr("(")));
}

TEST_F(ApiClientTest, BodyThatIsNotJsonIsEinval) {
  api.put_claim("default", "c1", claim("default", "c1"));
  api.reply_next(1, 200, "<html>not json</html>", "text/html");
  auto r = client.get_claim("default", "c1", &err);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EINVAL));
  EXPECT_THAT(err, HasSubstr("not a JSON object"));
  EXPECT_THAT(err, HasSubstr("HTTP 200"));
  api.reply_next(1, 200, "[1, 2]", "application/json");  // JSON, but not an object
  EXPECT_EQ(client.get_claim("default", "c1", &err).error(), Errno(EINVAL));
  EXPECT_TRUE(client.get_claim("default", "c1", &err).ok()) << err;  // control
}

// --- timeouts: a parked request ends by the client's own timeout.

TEST_F(ApiClientTest, HungServerIsEtimedoutAfterTheConfiguredTimeout) {
  api.put_claim("default", "c1", claim("default", "c1"));
  const auto timeout = std::chrono::milliseconds(300);
  ApiClient quick(api.config(timeout));
  api.hang();
  auto r = quick.get_claim("default", "c1", &err);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(ETIMEDOUT)) << err;
  EXPECT_THAT(err, HasSubstr("timed out"));
  // The request reached the server and parked there: the server never
  // answered (it is still parked), so only the client's timeout ended it.
  // (No clock comparison: curl measures its timeout from its own start, and
  // timings are benchmarks here, not tests.)
  EXPECT_EQ(api.hung(), 1u);
  // Control: released, the server answers the same request again.
  api.release_hang();
  EXPECT_TRUE(quick.get_claim("default", "c1", &err).ok()) << err;
}

TEST_F(ApiClientTest, ReleasedHangCompletesTheRequest) {
  api.put_claim("default", "c1", claim("default", "c1"));
  api.hang("/apis/resource.k8s.io/v1/namespaces/");
  std::optional<Result<json>> result;
  std::string thread_err;
  std::thread t([&] { result.emplace(client.get_claim("default", "c1", &thread_err)); });
  ASSERT_TRUE(api.wait_hung(1));
  // Not parked: a path outside the prefix is served while the other waits.
  EXPECT_TRUE(client.list_slices(kDriver, "n1", &err).ok()) << err;
  api.release_hang();
  t.join();
  ASSERT_TRUE(result->ok()) << thread_err;
  EXPECT_EQ(**result, claim("default", "c1"));
}

TEST(ApiClientStopTest, StoppingTheServerReleasesAParkedRequest) {
  auto api = std::make_unique<FakeApiServer>();
  api->put_claim("default", "c1", claim("default", "c1"));
  ApiClient client(api->config(std::chrono::seconds(60)));
  api->hang();
  std::optional<Result<json>> result;
  std::string err;
  std::thread t([&] { result.emplace(client.get_claim("default", "c1", &err)); });
  ASSERT_TRUE(api->wait_hung(1));
  api.reset();  // returns although a handler is parked: it answers 503
  t.join();
  ASSERT_FALSE(result->ok());
  EXPECT_EQ(result->error(), Errno(EIO)) << err;
}

TEST(ApiClientStopTest, ServerThatIsGoneIsEio) {
  ApiConfig cfg;
  {
    FakeApiServer api;
    cfg = api.config();
    cfg.ca_file = "/dev/null";  // the temp dir goes with the server
  }
  ApiClient client(cfg);
  std::string err;
  auto r = client.get_claim("default", "c1", &err);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EACCES)) << err;  // the token file went too: nothing sent
  cfg.token_file.clear();
  ApiClient anonymous(cfg);
  r = anonymous.get_claim("default", "c1", &err);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EIO)) << err;
  EXPECT_THAT(err, HasSubstr(cfg.server));
}

// --- TLS: the server's certificate is checked against ca_file.

TEST_F(ApiClientTest, CaThatDidNotSignTheServerIsEioNamingTheCertificate) {
  api.put_claim("default", "c1", claim("default", "c1"));
  auto cfg = api.config();
  cfg.ca_file = api.unrelated_ca_file();
  ApiClient wrong_ca(cfg);
  auto r = wrong_ca.get_claim("default", "c1", &err);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EIO));
  EXPECT_THAT(err, HasSubstr("certificate"));
  EXPECT_TRUE(api.requests().empty());  // refused in the handshake, nothing sent
  // Control: the CA that signed it.
  EXPECT_TRUE(client.get_claim("default", "c1", &err).ok()) << err;
}

// --- escaping: names are path segments, the selector a query value.

TEST(UrlEscapeTest, KeepsOnlyUnreservedCharacters) {
  EXPECT_EQ(url_escape("abc-XYZ_0.9~"), "abc-XYZ_0.9~");
  EXPECT_EQ(url_escape("a b/c?d#e%f+g=h,i"), "a%20b%2Fc%3Fd%23e%25f%2Bg%3Dh%2Ci");
  EXPECT_EQ(url_escape("\xc3\xa9"), "%C3%A9");
  EXPECT_EQ(url_escape(""), "");
}

TEST_F(ApiClientTest, PathSegmentsAreEscaped) {
  // Unescaped, "a?b" would ask for claim "a" with a query: the decoy.
  api.put_claim("ns 1", "a", claim("ns 1", "decoy"));
  api.put_claim("ns 1", "a?b", claim("ns 1", "a?b"));
  auto r = client.get_claim("ns 1", "a?b", &err);
  ASSERT_TRUE(r.ok()) << err;
  EXPECT_EQ((*r)["metadata"]["name"], "a?b");
  EXPECT_THAT(api.requests().back().target, HasSubstr("/namespaces/ns%201/resourceclaims/a%3Fb"));
  // '/', '#', '%' and '+' stay inside their segment too.
  api.put_claim("ns/x", "we/ird#na%20me+", claim("ns/x", "we/ird#na%20me+"));
  r = client.get_claim("ns/x", "we/ird#na%20me+", &err);
  ASSERT_TRUE(r.ok()) << err;
  EXPECT_EQ((*r)["metadata"]["name"], "we/ird#na%20me+");
  // A slice name too.
  ASSERT_TRUE(api.put_slice(slice(kDriver, "n1", "s/1 ?")));
  EXPECT_TRUE(client.delete_slice("s/1 ?", &err).ok()) << err;
  EXPECT_TRUE(api.slices().empty());
  EXPECT_THAT(api.requests().back().target, HasSubstr("/resourceslices/s%2F1%20%3F"));
}

// --- ResourceSlices.

TEST_F(ApiClientTest, ListSlicesSelectsThisDriverAndNode) {
  ASSERT_TRUE(api.put_slice(slice(kDriver, "n1", "mine")));
  ASSERT_TRUE(api.put_slice(slice(kDriver, "n2", "other-node")));
  ASSERT_TRUE(api.put_slice(slice("gpu.example.com", "n1", "other-driver")));
  auto r = client.list_slices(kDriver, "n1", &err);
  ASSERT_TRUE(r.ok()) << err;
  ASSERT_TRUE(r->is_array());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0]["metadata"]["name"], "mine");
  EXPECT_EQ(api.requests().back().query,
            "fieldSelector=spec.driver%3Dpcifs.io%2Cspec.nodeName%3Dn1");
  // Nothing for a node without slices: an empty array, not an error.
  r = client.list_slices(kDriver, "n3", &err);
  ASSERT_TRUE(r.ok()) << err;
  EXPECT_EQ(*r, json::array());
}

TEST_F(ApiClientTest, SelectorValuesAreEscaped) {
  // A value with ',' or '=' would split the selector if sent as is.
  ASSERT_TRUE(api.put_slice(slice("we,ird=d\\", "n1", "odd")));
  ASSERT_TRUE(api.put_slice(slice("we", "n1", "decoy")));
  auto r = client.list_slices("we,ird=d\\", "n1", &err);
  ASSERT_TRUE(r.ok()) << err;
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0]["metadata"]["name"], "odd");
}

TEST_F(ApiClientTest, ListWithoutAnItemsArrayIsEinval) {
  api.reply_next(1, 200, R"({"kind":"ResourceSliceList","items":5})", "application/json");
  EXPECT_EQ(client.list_slices(kDriver, "n1", &err).error(), Errno(EINVAL));
  EXPECT_THAT(err, HasSubstr("items"));
  api.reply_next(1, 200, R"({"kind":"ResourceSliceList","items":null})", "application/json");
  auto r = client.list_slices(kDriver, "n1", &err);
  ASSERT_TRUE(r.ok()) << err;
  EXPECT_EQ(*r, json::array());
}

TEST_F(ApiClientTest, CreateSliceReturnsItAsStored) {
  auto r = client.create_slice(slice(kDriver, "n1", "", "n1-pcifs.io-"), &err);
  ASSERT_TRUE(r.ok()) << err;
  std::string name = (*r)["metadata"]["name"];
  EXPECT_THAT(name, StartsWith("n1-pcifs.io-"));
  EXPECT_EQ(name.size(), std::string("n1-pcifs.io-").size() + 5);
  EXPECT_FALSE((*r)["metadata"]["uid"].get<std::string>().empty());
  EXPECT_FALSE((*r)["metadata"]["resourceVersion"].get<std::string>().empty());
  auto stored = api.slices();
  ASSERT_EQ(stored.count(name), 1u);
  EXPECT_EQ(stored[name], *r);
  // What went on the wire: POST to the collection, apiVersion and kind added.
  auto req = api.requests().back();
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.path, "/apis/resource.k8s.io/v1/resourceslices");
  auto sent = json::parse(req.body);
  EXPECT_EQ(sent["apiVersion"], "resource.k8s.io/v1");
  EXPECT_EQ(sent["kind"], "ResourceSlice");
  EXPECT_EQ(sent["spec"], slice(kDriver, "n1")["spec"]);
}

TEST_F(ApiClientTest, CreatingATakenNameIsEexist) {
  ASSERT_TRUE(client.create_slice(slice(kDriver, "n1", "s1"), &err).ok()) << err;
  auto r = client.create_slice(slice(kDriver, "n1", "s1"), &err);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EEXIST));
  EXPECT_THAT(err, HasSubstr("HTTP 409"));
  EXPECT_THAT(err, HasSubstr("\"s1\" already exists"));
  EXPECT_TRUE(client.create_slice(slice(kDriver, "n1", "s2"), &err).ok()) << err;  // control
  EXPECT_EQ(api.slices().size(), 2u);
}

TEST_F(ApiClientTest, SliceWithoutANameIsEinvalWithoutARequest) {
  auto r = client.create_slice(slice(kDriver, "n1"), &err);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EINVAL));
  EXPECT_THAT(err, HasSubstr("generateName"));
  EXPECT_EQ(client.replace_slice(slice(kDriver, "n1"), &err).error(), Errno(EINVAL));
  EXPECT_EQ(client.delete_slice("", &err).error(), Errno(EINVAL));
  EXPECT_TRUE(api.requests().empty());
  // The server's own refusal (422 Invalid: no spec.driver) is EINVAL too.
  json bad = slice(kDriver, "n1", "s1");
  bad["spec"].erase("driver");
  EXPECT_EQ(client.create_slice(bad, &err).error(), Errno(EINVAL));
  EXPECT_THAT(err, HasSubstr("HTTP 422"));
  EXPECT_THAT(err, HasSubstr("spec.driver"));
}

TEST_F(ApiClientTest, ReplaceSliceNeedsTheCurrentResourceVersion) {
  auto created = client.create_slice(slice(kDriver, "n1", "s1"), &err);
  ASSERT_TRUE(created.ok()) << err;
  json update = *created;
  update["spec"]["pool"]["generation"] = 2;
  auto replaced = client.replace_slice(update, &err);
  ASSERT_TRUE(replaced.ok()) << err;
  EXPECT_NE((*replaced)["metadata"]["resourceVersion"], (*created)["metadata"]["resourceVersion"]);
  EXPECT_EQ((*replaced)["metadata"]["uid"], (*created)["metadata"]["uid"]);
  EXPECT_EQ((*replaced)["spec"]["pool"]["generation"], 2);
  EXPECT_EQ(api.requests().back().method, "PUT");
  EXPECT_EQ(api.requests().back().path, "/apis/resource.k8s.io/v1/resourceslices/s1");
  // The same update again carries the old resourceVersion: 409 Conflict.
  update["spec"]["pool"]["generation"] = 3;
  auto stale = client.replace_slice(update, &err);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error(), Errno(EEXIST));
  EXPECT_THAT(err, HasSubstr("HTTP 409"));
  EXPECT_THAT(err, HasSubstr("the object has been modified"));
  EXPECT_EQ(api.slices()["s1"], *replaced);  // unchanged by the refused update
  // Control: with the current resourceVersion it goes through.
  update["metadata"]["resourceVersion"] = (*replaced)["metadata"]["resourceVersion"];
  ASSERT_TRUE(client.replace_slice(update, &err).ok()) << err;
  EXPECT_EQ(api.slices()["s1"]["spec"]["pool"]["generation"], 3);
  // A slice that is not there: ENOENT.
  json gone = update;
  gone["metadata"]["name"] = "s9";
  EXPECT_EQ(client.replace_slice(gone, &err).error(), Errno(ENOENT));
}

TEST_F(ApiClientTest, DeleteSliceCountsNotFoundAsDone) {
  ASSERT_TRUE(api.put_slice(slice(kDriver, "n1", "s1")));
  ASSERT_TRUE(client.delete_slice("s1", &err).ok()) << err;
  EXPECT_TRUE(api.slices().empty());
  err = "untouched";
  ASSERT_TRUE(client.delete_slice("s1", &err).ok()) << err;  // 404: already gone
  EXPECT_EQ(err, "");
  auto reqs = api.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[1].method, "DELETE");
  // Control: other failures are not swallowed.
  api.fail_next(1, 500);
  EXPECT_EQ(client.delete_slice("s1", &err).error(), Errno(EIO));
  api.fail_next(1, 403);
  EXPECT_EQ(client.delete_slice("s1", &err).error(), Errno(EACCES));
}

// --- configuration.

TEST_F(ApiClientTest, TrailingSlashOfTheServerIsDropped) {
  auto cfg = api.config();
  cfg.server += "/";
  ApiClient c(cfg);
  EXPECT_EQ(c.config().server, api.url());
  EXPECT_TRUE(c.list_slices(kDriver, "n1", &err).ok()) << err;
  EXPECT_THAT(api.requests().back().target, StartsWith("/apis/"));
}

TEST_F(ApiClientTest, OnlyHttpAndHttpsAreSpoken) {
  // A claim laid out as files: file:// would read it if curl were allowed to.
  std::string root = api.dir() + "/files";
  std::filesystem::create_directories(root +
                                      "/apis/resource.k8s.io/v1/namespaces/default/"
                                      "resourceclaims");
  std::ofstream(root + "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/c1")
      << claim("default", "c1").dump();
  auto cfg = api.config();
  cfg.server = "file://" + root;
  ApiClient c(cfg);
  auto r = c.get_claim("default", "c1", &err);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EIO));
  EXPECT_THAT(err, HasSubstr("file"));
  EXPECT_THAT(err, ::testing::Not(HasSubstr("HTTP")));
}

TEST_F(ApiClientTest, ConcurrentRequestsFromManyThreads) {
  api.put_claim("default", "c1", claim("default", "c1"));
  constexpr size_t kThreads = 6, kEach = 4;
  std::vector<std::thread> threads;
  std::vector<size_t> ok(kThreads, 0);
  for (size_t i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      std::string e;
      for (size_t k = 0; k < kEach; ++k)
        ok[i] += client.get_claim("default", "c1", &e).ok() ? 1 : 0;
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < kThreads; ++i) EXPECT_EQ(ok[i], kEach) << "thread " << i;
  EXPECT_EQ(api.requests().size(), kThreads * kEach);
}

class EnvVar {
 public:
  EnvVar(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~EnvVar() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(InClusterConfigTest, FromTheServiceEnvironment) {
  {
    EnvVar h("KUBERNETES_SERVICE_HOST", "10.96.0.1"), p("KUBERNETES_SERVICE_PORT", "443");
    auto c = in_cluster_config();
    EXPECT_EQ(c.server, "https://10.96.0.1:443");
    EXPECT_EQ(c.token_file, "/var/run/secrets/kubernetes.io/serviceaccount/token");
    EXPECT_EQ(c.ca_file, "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt");
  }
  {
    EnvVar h("KUBERNETES_SERVICE_HOST", "fd00:10:96::1"), p("KUBERNETES_SERVICE_PORT", "6443");
    EXPECT_EQ(in_cluster_config().server, "https://[fd00:10:96::1]:6443");
  }
  {
    EnvVar h("KUBERNETES_SERVICE_HOST", nullptr), p("KUBERNETES_SERVICE_PORT", "443");
    EXPECT_EQ(in_cluster_config().server, "");
  }
}

}  // namespace
}  // namespace pcifs::kube
