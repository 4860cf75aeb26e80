// libcurl client of the API server: one easy handle per request, so that
// requests from different threads share nothing but curl's global state
// (initialised once). See api_client.hpp for the errno contract.
#include "kube/api_client.hpp"

#include <curl/curl.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string_view>
#include <utility>

namespace pcifs::kube {

namespace {

constexpr std::string_view kResourceApi = "/apis/resource.k8s.io/v1";
// A response larger than this is refused: no ResourceSlice list of one node
// comes near it, and a misbehaving server must not exhaust the agent's memory.
constexpr size_t kMaxBody = size_t{64} << 20;

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using CurlPtr = std::unique_ptr<CURL, CurlDeleter>;
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n\v\f";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return {};
  size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

// Reads the bearer token (again at every request: projected tokens rotate).
Result<std::string> read_token(const std::string& path, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  if (in) ss << in.rdbuf();
  if (!in || in.bad()) {
    *error = "cannot read the token file " + path;
    return Errno(EACCES);
  }
  std::string token = trim(ss.str());
  if (token.empty()) {
    *error = "the token file " + path + " is empty";
    return Errno(EACCES);
  }
  return token;
}

size_t write_body(char* data, size_t size, size_t n, void* user) {
  auto* body = static_cast<std::string*>(user);
  size_t len = size * n;
  if (body->size() + len > kMaxBody) return 0;  // CURLE_WRITE_ERROR
  body->append(data, len);
  return len;
}

// The Status object's "message", when the body is one (or any object with a
// string "message"); empty otherwise.
std::string status_message(const std::string& body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_object()) return {};
  auto it = j.find("message");
  if (it == j.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

Errno errno_for_status(long status) {
  switch (status) {
    case 401:
    case 403: return Errno(EACCES);
    case 404: return Errno(ENOENT);
    case 409: return Errno(EEXIST);
    case 400:
    case 422: return Errno(EINVAL);
    case 429: return Errno(EAGAIN);
    default: return Errno(EIO);
  }
}

struct Response {
  long status = 0;
  std::string body;
};

struct Request {
  const char* method;
  std::string url;
  const std::string* body = nullptr;  // sent as application/json when set
};

// Sets the options common to every request; false when curl refused one.
bool set_options(CURL* c, const ApiConfig& cfg, const Request& rq, curl_slist* headers,
                 Response* resp, char* errbuf) {
  auto ms = static_cast<long>(cfg.timeout.count());
  bool ok = curl_easy_setopt(c, CURLOPT_URL, rq.url.c_str()) == CURLE_OK;
  ok = ok && curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
  ok = ok && curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, ms) == CURLE_OK;
  ok = ok && curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, ms) == CURLE_OK;
  ok = ok && curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf) == CURLE_OK;
  ok = ok && curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers) == CURLE_OK;
  ok = ok && curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_body) == CURLE_OK;
  ok = ok && curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp->body) == CURLE_OK;
  ok = ok && curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK;
  // Only HTTP(S), whatever --api-server names (no file://, no ldap://).
  ok = ok && curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http") == CURLE_OK;
  ok = ok && curl_easy_setopt(c, CURLOPT_USERAGENT, "pcifs-kube") == CURLE_OK;
  ok = ok && curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, rq.method) == CURLE_OK;
  if (!cfg.ca_file.empty()) {
    ok = ok && curl_easy_setopt(c, CURLOPT_CAINFO, cfg.ca_file.c_str()) == CURLE_OK;
  }
  if (rq.body != nullptr) {
    ok = ok && curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq.body->data()) == CURLE_OK;
    ok = ok && curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                                static_cast<curl_off_t>(rq.body->size())) == CURLE_OK;
  }
  return ok;
}

// Builds the header list: JSON both ways, the bearer token when configured.
Result<SlistPtr> make_headers(const ApiConfig& cfg, bool has_body, std::string* error) {
  std::string auth;
  if (!cfg.token_file.empty()) {
    auto token = read_token(cfg.token_file, error);
    if (!token) return token.error();
    auth = "Authorization: Bearer " + *token;
  }
  SlistPtr list;
  auto add = [&list](const std::string& h) {
    curl_slist* l = curl_slist_append(list.get(), h.c_str());
    if (l == nullptr) return false;
    (void)list.release();
    list.reset(l);
    return true;
  };
  bool ok = add("Accept: application/json");
  if (has_body) ok = ok && add("Content-Type: application/json");
  if (!auth.empty()) ok = ok && add(auth);
  // No "Expect: 100-continue" round trip before a body.
  ok = ok && add("Expect:");
  if (!ok) {
    *error = "out of memory building the request headers";
    return Errno(ENOMEM);
  }
  return list;
}

// One request; a non-2xx status is an error here, its sentence naming the URL,
// the status and the server's Status message.
Result<Response> perform(const ApiConfig& cfg, const Request& rq, std::string* error) {
  global_init();
  std::string what = std::string(rq.method) + " " + rq.url;
  auto headers = make_headers(cfg, rq.body != nullptr, error);
  if (!headers) {
    *error = what + ": " + *error;
    return headers.error();
  }
  CurlPtr c(curl_easy_init());
  Response resp;
  char errbuf[CURL_ERROR_SIZE] = {};
  if (!c || !set_options(c.get(), cfg, rq, headers->get(), &resp, errbuf)) {
    *error = what + ": cannot set up the request";
    return Errno(EIO);
  }
  CURLcode rc = curl_easy_perform(c.get());
  if (rc != CURLE_OK) {
    std::string reason = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_WRITE_ERROR && resp.body.size() + CURL_MAX_WRITE_SIZE > kMaxBody) {
      reason = "response larger than " + std::to_string(kMaxBody) + " bytes";
    }
    *error = what + ": " + reason;
    return Errno(rc == CURLE_OPERATION_TIMEDOUT ? ETIMEDOUT : EIO);
  }
  curl_easy_getinfo(c.get(), CURLINFO_RESPONSE_CODE, &resp.status);
  if (resp.status < 200 || resp.status > 299) {
    *error = what + ": HTTP " + std::to_string(resp.status);
    std::string msg = status_message(resp.body);
    if (!msg.empty()) *error += " (" + msg + ")";
    return errno_for_status(resp.status);
  }
  return resp;
}

// A 2xx response's body as a JSON object.
Result<nlohmann::json> parse_object(const Request& rq, const Response& resp, std::string* error) {
  auto j = nlohmann::json::parse(resp.body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    *error = std::string(rq.method) + " " + rq.url + ": HTTP " + std::to_string(resp.status) +
             " but the body is not a JSON object";
    return Errno(EINVAL);
  }
  return j;
}

Result<nlohmann::json> request_object(const ApiConfig& cfg, const Request& rq, std::string* error) {
  auto resp = perform(cfg, rq, error);
  if (!resp) return resp.error();
  return parse_object(rq, *resp, error);
}

// Field selector values escape '\', ',' and '=' with a backslash
// (k8s.io/apimachinery/pkg/fields.EscapeValue).
std::string selector_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == ',' || c == '=') out += '\\';
    out += c;
  }
  return out;
}

std::string slice_url(const ApiConfig& cfg, const std::string& name) {
  std::string url = cfg.server + std::string(kResourceApi) + "/resourceslices";
  if (!name.empty()) url += "/" + url_escape(name);
  return url;
}

std::string string_at(const nlohmann::json& j, const char* a, const char* b) {
  if (!j.is_object()) return {};
  auto ia = j.find(a);
  if (ia == j.end() || !ia->is_object()) return {};
  auto ib = ia->find(b);
  if (ib == ia->end() || !ib->is_string()) return {};
  return ib->get<std::string>();
}

// The body of a POST or PUT: the slice, with apiVersion and kind filled in.
Result<std::string> slice_body(const nlohmann::json& slice, std::string* error) {
  if (!slice.is_object()) {
    *error = "a ResourceSlice must be a JSON object";
    return Errno(EINVAL);
  }
  nlohmann::json j = slice;
  if (!j.contains("apiVersion")) j["apiVersion"] = "resource.k8s.io/v1";
  if (!j.contains("kind")) j["kind"] = "ResourceSlice";
  return j.dump();
}

}  // namespace

std::string url_escape(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '.' || c == '_' || c == '~';
    if (plain) {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  return out;
}

ApiConfig in_cluster_config() {
  static constexpr const char* kSa = "/var/run/secrets/kubernetes.io/serviceaccount";
  ApiConfig cfg;
  cfg.token_file = std::string(kSa) + "/token";
  cfg.ca_file = std::string(kSa) + "/ca.crt";
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || *host == '\0') return cfg;
  std::string h = host;
  if (h.find(':') != std::string::npos && h.front() != '[') h = "[" + h + "]";
  cfg.server = "https://" + h;
  if (port != nullptr && *port != '\0') cfg.server += std::string(":") + port;
  return cfg;
}

ApiClient::ApiClient(ApiConfig config) : config_(std::move(config)) {
  while (!config_.server.empty() && config_.server.back() == '/') config_.server.pop_back();
  global_init();
}

ApiClient::~ApiClient() = default;

Result<nlohmann::json> ApiClient::get_claim(const std::string& ns, const std::string& name,
                                            std::string* error) const {
  Request rq{"GET", config_.server + std::string(kResourceApi) + "/namespaces/" + url_escape(ns) +
                        "/resourceclaims/" + url_escape(name)};
  return request_object(config_, rq, error);
}

Result<nlohmann::json> ApiClient::list_slices(const std::string& driver, const std::string& node,
                                              std::string* error) const {
  std::string selector =
      "spec.driver=" + selector_value(driver) + ",spec.nodeName=" + selector_value(node);
  Request rq{"GET", slice_url(config_, "") + "?fieldSelector=" + url_escape(selector)};
  auto list = request_object(config_, rq, error);
  if (!list) return list.error();
  auto items = list->find("items");
  if (items == list->end() || items->is_null()) return nlohmann::json::array();
  if (!items->is_array()) {
    *error = "GET " + rq.url + ": the list's \"items\" is not an array";
    return Errno(EINVAL);
  }
  return std::move(*items);
}

Result<nlohmann::json> ApiClient::create_slice(const nlohmann::json& slice,
                                               std::string* error) const {
  if (string_at(slice, "metadata", "name").empty() &&
      string_at(slice, "metadata", "generateName").empty()) {
    *error = "create ResourceSlice: neither metadata.name nor metadata.generateName is set";
    return Errno(EINVAL);
  }
  auto body = slice_body(slice, error);
  if (!body) return body.error();
  Request rq{"POST", slice_url(config_, ""), &*body};
  return request_object(config_, rq, error);
}

Result<nlohmann::json> ApiClient::replace_slice(const nlohmann::json& slice,
                                                std::string* error) const {
  std::string name = string_at(slice, "metadata", "name");
  if (name.empty()) {
    *error = "replace ResourceSlice: metadata.name is not set";
    return Errno(EINVAL);
  }
  auto body = slice_body(slice, error);
  if (!body) return body.error();
  Request rq{"PUT", slice_url(config_, name), &*body};
  return request_object(config_, rq, error);
}

Result<void> ApiClient::delete_slice(const std::string& name, std::string* error) const {
  if (name.empty()) {
    *error = "delete ResourceSlice: no name";
    return Errno(EINVAL);
  }
  Request rq{"DELETE", slice_url(config_, name)};
  auto resp = perform(config_, rq, error);
  if (!resp && resp.error() == Errno(ENOENT)) {
    error->clear();
    return Ok();
  }
  if (!resp) return resp.error();
  return Ok();
}

}  // namespace pcifs::kube
