#include "kube/plugin_server.hpp"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <system_error>

#include "dra_v1.grpc.pb.h"
#include "pluginregistration.grpc.pb.h"

namespace pcifs::kube {

namespace dra = ::k8s::io::kubelet::pkg::apis::dra::v1;
namespace reg = ::pluginregistration;

namespace {

constexpr const char* kPluginType = "DRAPlugin";     // kubelet's pluginwatcher type
constexpr const char* kDraVersion = "v1.DRAPlugin";  // the service we serve

std::string errno_text(int e) { return std::error_code(e, std::generic_category()).message(); }

// An absolute path without "." or ".." (the endpoint the kubelet dials).
std::string absolute_path(const std::string& p) {
  std::error_code ec;
  auto a = std::filesystem::absolute(p, ec);
  return ec ? p : a.lexically_normal().string();
}

// Removes a socket left at `path` by an earlier run. Refuses any other kind of
// file, and a socket that still accepts connections (another process serves
// it: taking its path would cut it off from the kubelet).
bool clear_stale_socket(const std::string& path, std::string* error) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return true;
    *error = path + ": " + errno_text(errno);
    return false;
  }
  if (!S_ISSOCK(st.st_mode)) {
    *error = path + ": exists and is not a socket; refusing to replace it";
    return false;
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);  // length checked by caller
    const bool live = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    if (live) {
      *error = path + ": another process is serving this socket; refusing to replace it";
      return false;
    }
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    *error = path + ": cannot remove the stale socket: " + errno_text(errno);
    return false;
  }
  spdlog::info("kube: removed the stale socket {}", path);
  return true;
}

std::vector<ClaimRef> to_refs(const google::protobuf::RepeatedPtrField<dra::Claim>& claims) {
  std::vector<ClaimRef> out;
  out.reserve(static_cast<size_t>(claims.size()));
  for (const dra::Claim& c : claims) out.push_back({c.namespace_(), c.uid(), c.name()});
  return out;
}

std::string claim_name(const ClaimRef& c) { return c.ns + "/" + c.name + " (" + c.uid + ")"; }

void fill(const PrepareResult& r, dra::NodePrepareResourceResponse* out) {
  if (!r.error.empty()) {  // the kubelet ignores devices of a failed claim
    out->set_error(r.error);
    return;
  }
  for (const PreparedDevice& d : r.devices) {
    dra::Device* o = out->add_devices();
    for (const auto& n : d.request_names) o->add_request_names(n);
    o->set_pool_name(d.pool);
    o->set_device_name(d.device);
    for (const auto& id : d.cdi_device_ids) o->add_cdi_device_ids(id);
  }
}

void fill_unprepared(const std::string& error, dra::NodeUnprepareResourceResponse* out) {
  out->set_error(error);
}

// Calls the handler and answers every claim of the request in `resp`: with
// the handler's result, or with an error sentence when the handler left the
// claim out or threw (DraHandler promises not to; a bug must not cost the
// other claims or the agent).
template <class Results, class Resp, class Call, class Fill>
void answer_every_claim(const char* op, const std::vector<ClaimRef>& claims, Call call, Resp* resp,
                        Fill fill) {
  Results results;
  std::string failure;
  try {
    results = call();
  } catch (const std::exception& e) {
    failure = std::string("pcifs-kube: internal error while ") + op + " the claim: " + e.what();
  } catch (...) {
    failure =
        std::string("pcifs-kube: internal error while ") + op + " the claim: unknown exception";
  }
  for (const ClaimRef& c : claims) {
    auto& out = (*resp->mutable_claims())[c.uid];
    const auto it = results.find(c.uid);
    if (!failure.empty()) {
      out.set_error(failure);
    } else if (it == results.end()) {
      out.set_error("pcifs-kube: the driver returned no result for this claim");
    } else {
      fill(it->second, &out);
    }
    if (!out.error().empty()) spdlog::warn("kube: {} {}: {}", op, claim_name(c), out.error());
  }
}

// An RPC error only when not even the response could be built (no memory).
template <class F>
grpc::Status guarded(F f) {
  try {
    f();
    return grpc::Status::OK;
  } catch (const std::exception& e) {
    return grpc::Status(grpc::StatusCode::INTERNAL, e.what());
  }
}

}  // namespace

class RegistrationService final : public reg::Registration::Service {
 public:
  explicit RegistrationService(PluginServer& server) : server_(server) {}

  grpc::Status GetInfo(grpc::ServerContext*, const reg::InfoRequest*,
                       reg::PluginInfo* info) override {
    info->set_type(kPluginType);
    info->set_name(server_.options_.driver_name);
    info->set_endpoint(server_.dra_path_);
    info->add_supported_versions(kDraVersion);
    return grpc::Status::OK;
  }

  grpc::Status NotifyRegistrationStatus(grpc::ServerContext*, const reg::RegistrationStatus* st,
                                        reg::RegistrationStatusResponse*) override {
    server_.notified(st->plugin_registered(), st->error());
    return grpc::Status::OK;
  }

 private:
  PluginServer& server_;
};

class DraService final : public dra::DRAPlugin::Service {
 public:
  explicit DraService(DraHandler& handler) : handler_(handler) {}

  grpc::Status NodePrepareResources(grpc::ServerContext*,
                                    const dra::NodePrepareResourcesRequest* req,
                                    dra::NodePrepareResourcesResponse* resp) override {
    return guarded([&] {
      const std::vector<ClaimRef> claims = to_refs(req->claims());
      answer_every_claim<std::map<std::string, PrepareResult>>(
          "preparing", claims, [&] { return handler_.prepare(claims); }, resp, fill);
    });
  }

  grpc::Status NodeUnprepareResources(grpc::ServerContext*,
                                      const dra::NodeUnprepareResourcesRequest* req,
                                      dra::NodeUnprepareResourcesResponse* resp) override {
    return guarded([&] {
      const std::vector<ClaimRef> claims = to_refs(req->claims());
      answer_every_claim<std::map<std::string, std::string>>(
          "unpreparing", claims, [&] { return handler_.unprepare(claims); }, resp, fill_unprepared);
    });
  }

 private:
  DraHandler& handler_;
};

PluginServer::PluginServer(PluginServerOptions options, DraHandler& handler)
    : options_(std::move(options)),
      handler_(handler),
      reg_path_(absolute_path(options_.registry_dir + "/" + options_.driver_name + "-reg.sock")),
      dra_path_(absolute_path(options_.plugins_dir + "/" + options_.driver_name + "/dra.sock")),
      reg_service_(std::make_unique<RegistrationService>(*this)),
      dra_service_(std::make_unique<DraService>(handler_)) {}

PluginServer::~PluginServer() { stop(); }

bool PluginServer::start(std::string* error) {
  if (running()) return true;
  // spdlog's registry is a function-local static inside libspdlog, which is
  // not built with TSan: made here, before gRPC's threads exist, its creation
  // is ordered before their first log line where TSan can see it.
  (void)spdlog::default_logger_raw();
  {
    MutexLock lock(mu_);
    state_ = {};  // a new registration: the kubelet will call again
  }
  const std::filesystem::path dir = std::filesystem::path(dra_path_).parent_path();
  std::error_code ec;
  if (std::filesystem::create_directories(dir, ec)) {
    ::chmod(dir.c_str(), 0750);
  } else if (ec) {
    *error = dir.string() + ": cannot create the directory: " + ec.message();
    return false;
  }
  std::filesystem::create_directories(std::filesystem::path(reg_path_).parent_path(), ec);
  if (!serve(dra_path_, &dra_sock_, &dra_server_, true, error)) return false;
  if (!serve(reg_path_, &reg_sock_, &reg_server_, false, error)) {
    shutdown(&dra_server_, &dra_sock_);
    return false;
  }
  spdlog::info("kube: serving {} on {}, registration on {}", kDraVersion, dra_path_, reg_path_);
  return true;
}

bool PluginServer::serve(const std::string& path, OwnedSocket* owned,
                         std::unique_ptr<grpc::Server>* out, bool is_dra, std::string* error) {
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    *error = path + ": socket path too long (" + std::to_string(path.size()) + " bytes, at most " +
             std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + ")";
    return false;
  }
  if (!clear_stale_socket(path, error)) return false;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("unix:" + path, grpc::InsecureServerCredentials(), &port);
  if (is_dra) {
    builder.RegisterService(dra_service_.get());
  } else {
    builder.RegisterService(reg_service_.get());
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    *error = path + ": cannot serve gRPC on this socket (see gRPC's message above)";
    if (server) server->Shutdown();
    return false;
  }
  struct stat st {};
  if (::chmod(path.c_str(), 0600) != 0 || ::lstat(path.c_str(), &st) != 0) {
    *error = path + ": " + errno_text(errno);
    server->Shutdown();
    return false;
  }
  *owned = {path, st.st_dev, st.st_ino};
  *out = std::move(server);
  return true;
}

void PluginServer::shutdown(std::unique_ptr<grpc::Server>* server, OwnedSocket* owned) {
  if (*server) {
    (*server)->Shutdown(std::chrono::system_clock::now() + options_.shutdown_grace);
    (*server)->Wait();
    server->reset();
  }
  if (owned->path.empty()) return;
  // Only our own socket: a file put there since is not ours to remove.
  struct stat st {};
  if (::lstat(owned->path.c_str(), &st) == 0 && st.st_dev == owned->dev &&
      st.st_ino == owned->ino) {
    ::unlink(owned->path.c_str());
  }
  *owned = {};
}

void PluginServer::stop() {
  // Registration first: the kubelet drops the plugin when its socket goes,
  // before the endpoint it learned stops answering.
  shutdown(&reg_server_, &reg_sock_);
  shutdown(&dra_server_, &dra_sock_);
}

void PluginServer::notified(bool registered, const std::string& error) {
  RegistrationState copy;
  {
    MutexLock lock(mu_);
    state_ = {true, registered, error};
    copy = state_;
  }
  cv_.notify_all();
  if (registered) {
    spdlog::info("kube: the kubelet registered {} ({})", options_.driver_name, kDraVersion);
  } else {
    spdlog::error("kube: the kubelet refused to register {}: {}", options_.driver_name,
                  error.empty() ? "(no reason given)" : error);
  }
  if (callback_) callback_(copy);
}

RegistrationState PluginServer::registration() const {
  MutexLock lock(mu_);
  return state_;
}

bool PluginServer::wait_registration(std::chrono::milliseconds timeout) const {
  MutexLock lock(mu_);
  return cv_.wait_for(mu_, timeout, [this]() REQUIRES(mu_) { return state_.notified; });
}

}  // namespace pcifs::kube
