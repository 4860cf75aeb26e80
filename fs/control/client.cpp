#include "control/client.hpp"

#include <sys/socket.h>

#include <system_error>
#include <vector>

namespace pcifs::control {

namespace {

using nlohmann::json;

Errno fail(std::string* error, std::string text, int e) {
  *error = std::move(text);
  return Errno(e);
}

std::string connect_error(const std::string& path, int e) {
  const std::string head = "cannot connect to " + path + ": ";
  if (e == EACCES || e == EPERM) return head + "permission denied (the control socket is for root)";
  const std::string why = std::error_code(e, std::system_category()).message();
  if (e == ENOENT || e == ECONNREFUSED) {
    return head + why +
           " (is the pcifs host daemon running? start it with pcifs --control=" + path + ")";
  }
  return head + why;
}

}  // namespace

std::unique_ptr<Client> Client::connect(const std::string& path, std::string* error) {
  auto fd = connect_unix(path);
  if (!fd) {
    *error = connect_error(path, fd.error().value());
    return nullptr;
  }
  return std::unique_ptr<Client>(new Client(std::move(*fd)));
}

Result<json> Client::request(const json& req, std::string* error) {
  // A daemon that refuses us answers and closes without reading: the send
  // may then fail with EPIPE while its answer waits to be read.
  const auto sent = send_blocking(fd_.get(), to_line(req));
  auto response = read_object(error);
  if (!response && !sent) {
    return fail(error, "connection closed by the daemon", sent.error().value());
  }
  return response;
}

Result<json> Client::next_event(std::string* error) { return read_object(error); }

Result<json> Client::read_object(std::string* error) {
  std::string line;
  std::vector<char> buf(size_t{64} << 10);
  for (;;) {
    switch (reader_.next(&line)) {
      case LineReader::Next::kLine: {
        if (line.empty()) continue;
        json j = json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.is_object()) {
          return fail(error, "malformed answer from the daemon: " + line.substr(0, 200), EIO);
        }
        return j;
      }
      case LineReader::Next::kOverflow:
        return fail(error,
                    "answer from the daemon over " + std::to_string(kMaxResponseLine) + " bytes",
                    E2BIG);
      case LineReader::Next::kNeedMore: break;
    }
    const ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail(error, "connection closed by the daemon", ESHUTDOWN);
    reader_.feed(std::string_view(buf.data(), static_cast<size_t>(n)));
  }
}

}  // namespace pcifs::control
