// The agent's client of the Kubernetes API server: HTTPS with a bearer token
// and a CA bundle, as in-cluster clients do (the pod's service-account token
// and CA by default; --api-server/--token-file/--ca-file override them).
//
// Only what pcifs-kube needs of resource.k8s.io/v1: read a ResourceClaim;
// list, create, replace and delete this driver's ResourceSlices.
//
// Errors: a Result error (EIO for transport failures and 5xx, ETIMEDOUT for a
// request past its timeout, ENOENT for 404, EACCES for 401/403, EEXIST for
// 409, EINVAL for a body that is not JSON) with *error set to a sentence that
// names the URL and the status or curl's reason. Never throws. The token file
// is read again at every request (projected tokens rotate).
// Also: EINVAL for 400/422 (the server refused the object) and for a slice
// without a name, EAGAIN for 429, EIO for any other status; EACCES without a
// request when the token file cannot be read or is empty. The sentence adds
// the Status object's "message" when the server sent one.
//
// Thread safety: every method may be called from any thread; each request
// uses its own handle.
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "pcifs/result.hpp"

namespace pcifs::kube {

struct ApiConfig {
  std::string server;                        // "https://HOST:PORT" (no trailing slash)
  std::string token_file;                    // bearer token; empty: no Authorization header
  std::string ca_file;                       // PEM CA bundle; empty: the system's
  std::chrono::milliseconds timeout{10000};  // per request, connect included
};

// In-cluster defaults: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
// and the service account's token and ca.crt. `server` empty when the
// environment does not name one.
ApiConfig in_cluster_config();

// Percent-encodes everything but RFC 3986's unreserved characters: a path
// segment or a query value.
std::string url_escape(std::string_view s);

class ApiClient {
 public:
  explicit ApiClient(ApiConfig config);
  ~ApiClient();
  ApiClient(const ApiClient&) = delete;
  ApiClient& operator=(const ApiClient&) = delete;

  const ApiConfig& config() const { return config_; }

  // GET /apis/resource.k8s.io/v1/namespaces/NS/resourceclaims/NAME.
  Result<nlohmann::json> get_claim(const std::string& ns, const std::string& name,
                                   std::string* error) const;
  // GET /apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.driver=D,spec.nodeName=N:
  // the ResourceSliceList's "items" array (empty when it has none).
  Result<nlohmann::json> list_slices(const std::string& driver, const std::string& node,
                                     std::string* error) const;
  // POST a ResourceSlice (metadata.name or metadata.generateName set); returns it as stored.
  Result<nlohmann::json> create_slice(const nlohmann::json& slice, std::string* error) const;
  // PUT a ResourceSlice by metadata.name (metadata.resourceVersion as read); returns it.
  Result<nlohmann::json> replace_slice(const nlohmann::json& slice, std::string* error) const;
  // DELETE a ResourceSlice by name (404 counts as done).
  Result<void> delete_slice(const std::string& name, std::string* error) const;

 private:
  ApiConfig config_;
};

}  // namespace pcifs::kube
