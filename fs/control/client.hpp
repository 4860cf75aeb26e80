// The client end of the control socket, for `pcifs view` (cli.hpp) and for
// tests and tools: connect, send one request, read one response; after a
// "watch" request, read events one at a time.
//
// Errors are sentences for the person at the terminal ("cannot connect to
// PATH: No such file or directory (is the pcifs host daemon running? ...)").
// A Client owns its socket (blocking, close-on-exec); one thread at a time.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "control/protocol.hpp"
#include "control/unix_socket.hpp"
#include "pcifs/result.hpp"

namespace pcifs::control {

class Client {
 public:
  // Null with *error set when the socket cannot be reached (errno in the
  // text: ENOENT/ECONNREFUSED suggest starting the daemon; EACCES says the
  // socket is for root).
  static std::unique_ptr<Client> connect(const std::string& path, std::string* error);

  // Sends `req` as one line and returns the response object, {"ok":false,...}
  // included. An error (Errno + *error) only when no response came: the
  // connection broke ("connection closed by the daemon") or the answer was
  // not a JSON object. When the daemon refused the connection before reading
  // (another uid, too many connections), its error line is still returned.
  Result<nlohmann::json> request(const nlohmann::json& req, std::string* error);

  // The next event after a successful "watch": blocks until one arrives.
  // ESHUTDOWN with "connection closed by the daemon" at EOF.
  Result<nlohmann::json> next_event(std::string* error);

  int fd() const { return fd_.get(); }

 private:
  explicit Client(UniqueFd fd) : fd_(std::move(fd)), reader_(kMaxResponseLine) {}
  Result<nlohmann::json> read_object(std::string* error);

  UniqueFd fd_;
  LineReader reader_;
};

}  // namespace pcifs::control
