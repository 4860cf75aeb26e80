// Fuzzes the control socket's wire protocol [S16] (fs/control/protocol.hpp):
// the input is a byte stream as a client would send it, fed to a LineReader
// in chunks (sizes from the input) with a small line limit, and every line it
// yields is parsed with parse_request. Checks the LineReader's promises (it
// never holds much more than max_line of one line, overflow is final) and
// parse_request's (EINVAL or E2BIG with a message; a request is an object
// with a known verb; what it answers can be written back as one line).
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>

#include "control/protocol.hpp"
#include "fuzz/fuzz_input.hpp"

namespace {

using namespace pcifs;
using namespace pcifs::control;

void check_line(const std::string& line) {
  if (line.find('\n') != std::string::npos) fuzz::fail("a line with a newline");
  std::string error;
  auto r = parse_request(line, &error);
  if (!r) {
    if (r.error().value() != EINVAL && r.error().value() != E2BIG) {
      fuzz::fail("parse_request: unexpected errno");
    }
    if (error.empty()) fuzz::fail("parse_request: failure without a message");
    const std::string out = error_line(error);
    if (out.find('\n') != out.size() - 1) fuzz::fail("error_line: not one line");
    return;
  }
  if (!r->body.is_object()) fuzz::fail("parse_request: a request that is not an object");
  if (r->verb == "add" && !r->body.at("source").is_string()) fuzz::fail("add without source");
  if (r->verb == "rm" && r->body.at("name").get<std::string>().empty()) fuzz::fail("rm: no name");
  const std::string out = to_line(r->body);
  if (out.find('\n') != out.size() - 1) fuzz::fail("to_line: not one line");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  const size_t max_line = 16 + in.u16() % 4096;
  const uint8_t chunk = static_cast<uint8_t>(in.byte() | 1);
  LineReader reader(max_line);
  std::string line;
  bool overflowed = false;
  while (!in.empty()) {
    reader.feed(in.text(chunk));
    if (reader.partial_size() > max_line) fuzz::fail("LineReader holds more than max_line");
    for (;;) {
      const auto next = reader.next(&line);
      if (next == LineReader::Next::kNeedMore) break;
      if (next == LineReader::Next::kOverflow) {
        overflowed = true;
        break;
      }
      if (overflowed) fuzz::fail("a line after an overflow");
      if (line.size() > max_line) fuzz::fail("a line longer than max_line");
      check_line(line);
    }
    if (overflowed) break;
  }
  if (overflowed && reader.next(&line) != LineReader::Next::kOverflow) {
    fuzz::fail("overflow is not final");
  }
  // The whole input as one line too, newlines and all (the reader cut it at them).
  std::string error;
  auto whole = parse_request(fuzz::as_text(data, size), &error);
  if (!whole && error.empty()) fuzz::fail("parse_request: failure without a message");
  (void)json_depth(fuzz::as_text(data, size));
  return 0;
}
