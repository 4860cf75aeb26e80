// pcifs-kube: the Kubernetes DRA driver for pcifs (issue 10; README
// "Kubernetes"). A node agent: it serves the kubelet's plugin registration and
// DRA services on unix sockets, publishes the node's devices as
// ResourceSlices, and turns each prepared ResourceClaim into a pcifs runtime
// view through the host daemon's control socket. It mounts nothing itself:
// the views belong to the host daemon (pcifs.service), so they outlive agent
// restarts, and stopping the agent leaves every view and slice in place.
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <thread>

#include "control/client.hpp"
#include "kube/api_client.hpp"
#include "kube/driver.hpp"
#include "kube/plugin_server.hpp"
#include "kube/publisher.hpp"
#include "pcifs/sync.hpp"

namespace {

using nlohmann::json;
using namespace pcifs::kube;
using pcifs::CondVar;
using pcifs::Mutex;
using pcifs::MutexLock;

constexpr int kUsageError = 2;

class ApiClaimReader : public ClaimReader {
 public:
  explicit ApiClaimReader(const ApiClient& api) : api_(api) {}
  pcifs::Result<json> get_claim(const std::string& ns, const std::string& name,
                                std::string* error) override {
    return api_.get_claim(ns, name, error);
  }

 private:
  const ApiClient& api_;
};

// Follows the host daemon's `watch` stream and pokes the publisher on every
// event that changes the inventory; reconnects (1 s, then up to 10 s apart)
// when the daemon restarts. stop() shuts the socket down to end a blocked read.
class Watcher {
 public:
  Watcher(std::string control, Publisher& publisher)
      : control_(std::move(control)), publisher_(publisher) {}

  void run() {
    auto backoff = std::chrono::milliseconds(1000);
    while (!stopping()) {
      std::string error;
      try {
        follow(&backoff, &error);
      } catch (const std::exception& e) {
        error = std::string("internal error: ") + e.what();
      }
      if (stopping()) return;
      spdlog::warn("host daemon events: {} (again in {} ms)", error, backoff.count());
      MutexLock lock(mu_);
      cv_.wait_for(mu_, backoff, [&]() REQUIRES(mu_) { return stopping_; });
      backoff = std::min(backoff * 2, std::chrono::milliseconds(10000));
    }
  }

  void stop() {
    MutexLock lock(mu_);
    stopping_ = true;
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
    cv_.notify_all();
  }

 private:
  // One connection: watch until it ends.
  void follow(std::chrono::milliseconds* backoff, std::string* error_out) {
    std::string& error = *error_out;
    {
      auto client = pcifs::control::Client::connect(control_, &error);
      if (client) {
        auto ok = client->request(json{{"verb", "watch"}}, &error);
        if (ok && ok->value("ok", false)) {
          {
            MutexLock lock(mu_);
            if (stopping_) return;
            fd_ = client->fd();
          }
          // Forget the fd before the client closes it, however this ends.
          struct Forget {
            Watcher* w;
            ~Forget() {
              MutexLock lock(w->mu_);
              w->fd_ = -1;
            }
          } forget{this};
          *backoff = std::chrono::milliseconds(1000);
          publisher_.poke();  // whatever happened while we were not watching
          for (;;) {
            auto e = client->next_event(&error);
            if (!e) break;
            const std::string kind = e->value("event", "");
            // overflow: the daemon dropped events for us; whatever they were, look again.
            if (kind == "device_arrived" || kind == "device_left" || kind == "health" ||
                kind == "overflow") {
              spdlog::debug("host daemon event {}: republishing", e->dump());
              publisher_.poke();
            }
          }
        }
      }
    }
  }
  bool stopping() {
    MutexLock lock(mu_);
    return stopping_;
  }
  const std::string control_;
  Publisher& publisher_;
  Mutex mu_{"Watcher::mu_"};
  CondVar cv_;
  bool stopping_ GUARDED_BY(mu_) = false;
  int fd_ GUARDED_BY(mu_) = -1;
};

struct Args {
  std::string node;
  std::string control = "/run/pcifs/control.sock";
  std::string registry_dir = kDefaultRegistryDir;
  std::string plugins_dir = kDefaultPluginsDir;
  std::string state_dir;  // default: PLUGINS_DIR/pcifs.io
  std::string cdi_dir = "/var/run/cdi";
  std::string api_server, token_file, ca_file;
  unsigned api_timeout_ms = 10000;
  unsigned resync_s = 60;
  std::string log_level = "info";
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "pcifs-kube: %s\n", msg.c_str());
  std::exit(kUsageError);
}

bool make_dirs(const std::string& path, mode_t mode) {
  std::string at;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || (path[i] == '/' && i > 0)) {
      at = path.substr(0, i);
      if (::mkdir(at.c_str(), mode) != 0 && errno != EEXIST) return false;
    }
  }
  return true;
}

int run(int argc, char** argv) {
  Args a;
  if (const char* n = std::getenv("NODE_NAME")) a.node = n;
  CLI::App app{"pcifs-kube: the pcifs.io Kubernetes DRA driver (a node agent)", "pcifs-kube"};
  app.set_version_flag("--version", "pcifs-kube " PCIFS_VERSION);
  app.add_option("--node-name", a.node, "this node's name (default: $NODE_NAME)");
  app.add_option("--control", a.control, "the pcifs host daemon's control socket")
      ->capture_default_str();
  app.add_option("--registry-dir", a.registry_dir,
                 "the kubelet's plugin registry (the registration socket: DIR/pcifs.io-reg.sock)")
      ->capture_default_str();
  app.add_option("--plugins-dir", a.plugins_dir,
                 "the kubelet's plugins directory (the DRA socket: DIR/pcifs.io/dra.sock)")
      ->capture_default_str();
  app.add_option("--state-dir", a.state_dir,
                 "where the checkpoint lives (default: PLUGINS_DIR/pcifs.io)");
  app.add_option("--cdi-dir", a.cdi_dir,
                 "where the host daemon writes its CDI specs: a prepared view must have its "
                 "spec there ('none': not checked)")
      ->capture_default_str();
  app.add_option("--api-server", a.api_server,
                 "the API server, https://HOST:PORT (default: in-cluster, from "
                 "$KUBERNETES_SERVICE_HOST/PORT)");
  app.add_option("--token-file", a.token_file,
                 "bearer token (default: the pod's service-account token)");
  app.add_option("--ca-file", a.ca_file, "CA bundle of the API server (default: the pod's)");
  app.add_option("--api-timeout", a.api_timeout_ms, "milliseconds per API request")
      ->check(CLI::Range(100u, 600000u))
      ->capture_default_str();
  app.add_option("--resync", a.resync_s, "seconds between ResourceSlice checks without events")
      ->check(CLI::Range(1u, 86400u))
      ->capture_default_str();
  app.add_option("--log-level", a.log_level, "trace|debug|info|warn|error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : kUsageError;
  }
  if (a.node.empty()) usage_error("--node-name: required (or set $NODE_NAME)");
  if (a.state_dir.empty()) a.state_dir = a.plugins_dir + "/" + kDriverName;
  spdlog::set_default_logger(spdlog::stderr_color_mt("pcifs-kube"));
  spdlog::set_level(spdlog::level::from_str(a.log_level));

  ApiConfig api_config = in_cluster_config();
  if (!a.api_server.empty()) api_config.server = a.api_server;
  if (!a.token_file.empty()) api_config.token_file = a.token_file;
  if (!a.ca_file.empty()) api_config.ca_file = a.ca_file;
  api_config.timeout = std::chrono::milliseconds(a.api_timeout_ms);
  if (api_config.server.empty()) {
    usage_error("no API server: give --api-server (and --token-file, --ca-file) or run in a pod");
  }

  if (!make_dirs(a.state_dir, 0700)) usage_error("--state-dir " + a.state_dir + ": cannot create");
  std::string error;
  auto checkpoint = Checkpoint::load(a.state_dir + "/checkpoint.json", &error);
  if (!checkpoint) {
    spdlog::error("{} (move it away to start afresh: prepared views stay until unprepared)", error);
    return 1;
  }

  // Signals are taken by sigwait below: blocked before any thread starts.
  sigset_t stop_set;
  sigemptyset(&stop_set);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&stop_set, s);
  pthread_sigmask(SIG_BLOCK, &stop_set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  ApiClient api(api_config);
  ApiClaimReader claims(api);
  ControlSocketDaemon daemon(a.control);
  Driver driver(a.node, daemon, claims, std::move(*checkpoint),
                a.cdi_dir == "none" ? std::string() : a.cdi_dir);
  if (const size_t unsettled = driver.recover()) {
    spdlog::info("{} claim(s) in the checkpoint wait for the kubelet's next call", unsettled);
  }

  ApiSliceStore store(api, a.node);
  Publisher publisher(a.node, daemon, store, std::chrono::seconds(a.resync_s));
  Watcher watcher(a.control, publisher);
  std::thread publish_thread([&] { publisher.run(); });
  std::thread watch_thread([&] { watcher.run(); });

  PluginServerOptions po;
  po.registry_dir = a.registry_dir;
  po.plugins_dir = a.plugins_dir;
  // gRPC's graceful shutdown waits out the grace while a client (the kubelet)
  // keeps its connection open, even with no call in flight: keep it short. A
  // call cut off is retried by the kubelet; our handler still finishes it.
  po.shutdown_grace = std::chrono::milliseconds(1000);
  PluginServer server(po, driver);
  server.on_registration([](const RegistrationState& s) {
    if (s.registered) {
      spdlog::info("registered with the kubelet");
    } else {
      spdlog::error("the kubelet refused the registration: {}", s.error);
    }
  });
  int rc = 0;
  if (!server.start(&error)) {
    spdlog::error("{}", error);
    rc = 1;
  } else {
    spdlog::info("pcifs-kube on node {}: DRA {}, registration {}, host daemon {}, API server {}",
                 a.node, server.dra_socket(), server.registration_socket(), a.control,
                 api_config.server);
    int sig = 0;
    sigwait(&stop_set, &sig);
    spdlog::info("signal {}: stopping (views and ResourceSlices stay)", sig);
  }
  server.stop();
  spdlog::info("kubelet sockets closed");
  watcher.stop();
  publisher.stop();
  watch_thread.join();
  publish_thread.join();
  return rc;
}

}  // namespace

// Anything thrown (an allocation, a library that throws) ends the agent with
// a message and status 1, not an abort: the kubelet restarts it, and its
// checkpoint says what it had prepared.
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pcifs-kube: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "pcifs-kube: an unknown exception\n");
  }
  return 1;
}
