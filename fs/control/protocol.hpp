// The control socket's wire protocol [S16]: line-delimited JSON over a
// SOCK_STREAM unix socket. Each request is one line holding one JSON object
// with a "verb" (add, rm, ls, devices, locks, watch, ping); each response is one line,
// {"ok":true,...} or {"ok":false,"error":"text"}. After a successful "watch"
// the daemon writes event lines ({"event":...}) until the client closes.
//
// Pure: no I/O, no logging. Everything here is a plain value or a small
// single-owner object (LineReader); nothing is shared between threads.
#pragma once

#include <cstddef>
#include <deque>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "pcifs/result.hpp"

namespace pcifs::control {

// The longest request line a daemon reads; a longer one closes the connection.
inline constexpr size_t kMaxLine = size_t{1} << 20;
// The longest response line a client reads (an `ls` of many views is long).
inline constexpr size_t kMaxResponseLine = size_t{64} << 20;
// Deeper JSON nesting is refused before parsing: copying or printing a value
// recurses, and a 1 MiB line of '[' must not exhaust a connection's stack.
inline constexpr size_t kMaxDepth = 64;

inline constexpr std::string_view kDefaultControlPath = "/run/pcifs/control.sock";

struct Request {
  std::string verb;     // one of add, rm, ls, devices, locks, watch, ping
  nlohmann::json body;  // the whole request object; for "add", body["source"] is normalised
};

// Parses and validates one request line (without its '\n'). On failure sets
// *error to a message for the client ("verb: expected one of ...") and returns
// EINVAL (E2BIG for a line over kMaxLine). Fields a verb does not use are
// ignored, so that a newer client can talk to an older daemon.
//   add:   "view" (object, required); "source" (string, optional): the file it
//          came from, for error messages; "-" becomes "<stdin>", absent
//          becomes "<request>".
//   rm:    "name" (non-empty string, required).
//   ls, devices, watch, ping: nothing.
Result<Request> parse_request(std::string_view line, std::string* error);

// The text a daemon sends for a line over kMaxLine: "request over 1048576 bytes".
std::string overflow_error_text(size_t max_line = kMaxLine);

// A JSON value as one protocol line: compact, '\n'-terminated. Invalid UTF-8
// in strings is replaced (U+FFFD) rather than thrown.
std::string to_line(const nlohmann::json& value);
// {"ok":false,"error":text} as a line.
std::string error_line(const std::string& text);
// The depth of the deepest array/object nesting in `text` (strings skipped);
// stops counting past `limit`. Pure scan, no allocation.
size_t json_depth(std::string_view text, size_t limit = kMaxDepth);

// Splits a byte stream into lines without ever holding more than about
// max_line bytes of one line: a line that grows past max_line puts the reader
// into the overflow state (its bytes are dropped and the buffer released), so a
// 100 MB line costs at most max_line of memory. A trailing '\r' is removed.
// Single owner, not thread-safe.
class LineReader {
 public:
  enum class Next { kLine, kNeedMore, kOverflow };

  explicit LineReader(size_t max_line = kMaxLine) : max_line_(max_line) {}

  // Appends bytes as read from a socket. After an overflow, bytes are ignored.
  void feed(std::string_view bytes);
  // The next complete line (kLine, in *line, without '\n'); kNeedMore when no
  // complete line is buffered; kOverflow once the lines read before the long
  // one are consumed. Overflow is final.
  Next next(std::string* line);

  bool overflowed() const { return overflow_; }
  // Bytes of the current incomplete line, and the memory reserved for it.
  size_t partial_size() const { return partial_.size(); }
  size_t partial_capacity() const { return partial_.capacity(); }
  // Bytes held in complete lines not yet taken by next().
  size_t queued_bytes() const { return queued_bytes_; }

 private:
  void append_partial(std::string_view bytes);
  void overflow();

  size_t max_line_;
  std::string partial_;
  std::deque<std::string> lines_;
  size_t queued_bytes_ = 0;
  bool overflow_ = false;
};

}  // namespace pcifs::control
