// One accepted control connection, served on the calling thread (the
// Server's per-connection thread): requests one line at a time, answers from
// the Handler, "ping" and "watch" answered here; after "watch" the
// connection only carries events from the WatcherHub. Internal to the server.
//
// The descriptor is owned by the session and closed when serve_connection
// returns: at EOF, at a line over kMaxLine (after one error line), at the idle
// timeout, when the peer stops reading a response for idle_timeout, when a
// watcher goes away, or as soon as `stop_fd` becomes readable.
#pragma once

#include "control/server.hpp"
#include "control/unix_socket.hpp"
#include "control/watch_queue.hpp"

namespace pcifs::control {

struct SessionEnv {
  const ServerOptions* options = nullptr;
  Handler* handler = nullptr;
  WatcherHub* hub = nullptr;
  int stop_fd = -1;
};

// Serves one connection (a non-blocking socket) until it ends.
void serve_connection(UniqueFd fd, const SessionEnv& env);

}  // namespace pcifs::control
