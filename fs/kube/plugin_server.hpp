// The kubelet side of pcifs-kube: two gRPC services on unix sockets.
//
//   <registry_dir>/<driver>-reg.sock   pluginregistration.Registration: the
//       kubelet's pluginwatcher finds it, calls GetInfo (type "DRAPlugin",
//       name = the driver, endpoint = the DRA socket's absolute path,
//       versions {"v1.DRAPlugin"}) and answers with NotifyRegistrationStatus.
//   <plugins_dir>/<driver>/dra.sock    k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin:
//       NodePrepareResources / NodeUnprepareResources, passed to a DraHandler
//       as plain values (dra_handler.hpp).
//
// Every claim of a request gets an entry in the response: a claim the handler
// left out, or every claim of a call whose handler threw, gets an error
// sentence there (the kubelet retries it), never a failed RPC or a crash.
//
// Socket files: a socket left at either path by an earlier run is removed
// before binding; any other kind of file there, or a socket that another
// process still serves, is refused (start() fails and names the path). stop()
// removes only the socket files this server created (same inode), so a file
// put there since is left alone. The DRA socket's directory is created (mode
// 0750) when missing; the sockets are mode 0600 (the kubelet runs as root).
// The DRA service starts before the registration socket appears, and stops
// after it is gone, so the kubelet never learns an endpoint that does not
// answer.
//
// Ownership: the server holds a reference to the handler, which must outlive
// it. Thread safety: the handler is called from gRPC's threads, possibly
// several calls at once. start() and stop() are for one owning thread;
// registration() and wait_registration() may be called from any thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "kube/dra_handler.hpp"
#include "pcifs/sync.hpp"

namespace grpc {
class Server;
}

namespace pcifs::kube {

inline constexpr const char* kDefaultRegistryDir = "/var/lib/kubelet/plugins_registry";
inline constexpr const char* kDefaultPluginsDir = "/var/lib/kubelet/plugins";

struct PluginServerOptions {
  std::string driver_name = kDriverName;
  std::string registry_dir = kDefaultRegistryDir;
  std::string plugins_dir = kDefaultPluginsDir;
  // How long stop() lets calls in progress finish before cancelling them.
  std::chrono::milliseconds shutdown_grace{5000};
};

// What the kubelet last said in NotifyRegistrationStatus.
struct RegistrationState {
  bool notified = false;    // NotifyRegistrationStatus has been called
  bool registered = false;  // ... and said the plugin was accepted
  std::string error;        // the kubelet's reason when it was not
};

class RegistrationService;
class DraService;

class PluginServer {
 public:
  // Called (on a gRPC thread, no lock held) at every NotifyRegistrationStatus.
  using RegistrationCallback = std::function<void(const RegistrationState&)>;

  PluginServer(PluginServerOptions options, DraHandler& handler);
  ~PluginServer();  // stop()
  PluginServer(const PluginServer&) = delete;
  PluginServer& operator=(const PluginServer&) = delete;

  // Set before start().
  void on_registration(RegistrationCallback cb) { callback_ = std::move(cb); }

  // Binds and serves both sockets. False with *error set (a sentence naming
  // the path) when either cannot be served; nothing is left running then.
  // start() after stop() serves again on the same paths.
  bool start(std::string* error);
  // Shuts both servers down and removes their socket files. Idempotent.
  // Waits for handler calls in progress: gRPC cancels them after
  // options.shutdown_grace, but a DraHandler call must still return.
  void stop();
  bool running() const { return dra_server_ != nullptr; }

  const std::string& registration_socket() const { return reg_path_; }
  const std::string& dra_socket() const { return dra_path_; }  // absolute

  RegistrationState registration() const EXCLUDES(mu_);
  // Waits until NotifyRegistrationStatus has been called (true) or `timeout`
  // passed (false).
  bool wait_registration(std::chrono::milliseconds timeout) const EXCLUDES(mu_);

 private:
  friend class RegistrationService;
  void notified(bool registered, const std::string& error) EXCLUDES(mu_);

  struct OwnedSocket {
    std::string path;
    dev_t dev = 0;
    ino_t ino = 0;
  };
  bool serve(const std::string& path, OwnedSocket* owned, std::unique_ptr<grpc::Server>* out,
             bool dra, std::string* error);
  void shutdown(std::unique_ptr<grpc::Server>* server, OwnedSocket* owned);

  const PluginServerOptions options_;
  DraHandler& handler_;
  std::string reg_path_;
  std::string dra_path_;
  RegistrationCallback callback_;
  std::unique_ptr<RegistrationService> reg_service_;
  std::unique_ptr<DraService> dra_service_;
  std::unique_ptr<grpc::Server> reg_server_;
  std::unique_ptr<grpc::Server> dra_server_;
  OwnedSocket reg_sock_;
  OwnedSocket dra_sock_;

  mutable Mutex mu_{"PluginServer::mu_"};
  mutable CondVar cv_;
  RegistrationState state_ GUARDED_BY(mu_);
};

}  // namespace pcifs::kube
