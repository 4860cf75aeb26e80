// HostControl: the control socket's Handler for a host daemon [S16]. It
// turns `pcifs view add|rm|ls` into ViewHost calls, and the Mediator's
// events (devices, power, claims) plus health changes into `watch` lines.
//
// Ownership: borrows the Mediator and the ViewHost; owns the Server once
// start() succeeded. Thread safety: the Handler methods run on connection
// threads, concurrently; poll_health() on one thread (the daemon's loop).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "control/server.hpp"
#include "fuse/view_host.hpp"

namespace pcifs::fuse {

class HostControl final : public control::Handler {
 public:
  HostControl(Mediator& m, ViewHost& host) : mediator_(m), host_(host) {}
  ~HostControl() override;  // stop(); after a stop() it touches nothing it borrows

  // Listens at options.path; events flow to watchers from now on.
  bool start(const control::ServerOptions& options, std::string* error) EXCLUDES(mu_);
  void stop() EXCLUDES(mu_);

  nlohmann::json add(const nlohmann::json& view, const std::string& source) override;
  nlohmann::json rm(const std::string& name) override;
  nlohmann::json ls() override;
  nlohmann::json devices() override;

  // Publishes the devices whose health changed since the last call; the
  // first call takes the baseline. A check reads each D0 device's vendor ID.
  void poll_health() EXCLUDES(mu_);

 private:
  void publish(const nlohmann::json& event) EXCLUDES(mu_);

  Mediator& mediator_;
  ViewHost& host_;
  // Events come from any thread; stop() takes the server out under mu_ and
  // destroys it after, so a connection thread that publishes while the
  // server joins it finds none rather than waiting for mu_.
  // Lock order: leaf chain mu_ -> WatcherHub::mu_ -> WatchQueue::mu_ (fs/core/mediator_state.hpp).
  mutable Mutex mu_{"HostControl::mu_"};
  std::unique_ptr<control::Server> server_ GUARDED_BY(mu_);
  std::map<Bdf, std::string> health_;  // poll_health's thread only
};

}  // namespace pcifs::fuse
