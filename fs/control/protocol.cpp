#include "control/protocol.hpp"

#include <algorithm>
#include <cstring>

namespace pcifs::control {

namespace {

using nlohmann::json;

constexpr std::string_view kVerbList = "add, rm, ls, devices, locks, watch, ping";
constexpr size_t kMaxEcho = 64;  // how much of a bad value an error message quotes

bool known_verb(std::string_view v) {
  return v == "add" || v == "rm" || v == "ls" || v == "devices" || v == "locks" || v == "watch" ||
         v == "ping";
}

Errno fail(std::string* error, std::string text, int err = EINVAL) {
  *error = std::move(text);
  return Errno(err);
}

// nlohmann's messages start with "[json.exception.parse_error.101] ": noise
// for the person reading the answer.
std::string without_exception_tag(const char* what) {
  std::string_view s(what);
  if (!s.empty() && s.front() == '[') {
    const size_t end = s.find("] ");
    if (end != std::string_view::npos) s.remove_prefix(end + 2);
  }
  return std::string(s);
}

std::string echo(const json& value) {
  std::string s = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > kMaxEcho) s = s.substr(0, kMaxEcho) + "...";
  return s;
}

Result<json> parse_object(std::string_view line, std::string* error) {
  if (line.size() > kMaxLine) return fail(error, overflow_error_text(), E2BIG);
  if (json_depth(line) > kMaxDepth) {
    return fail(error, "not JSON: nested deeper than " + std::to_string(kMaxDepth) + " levels");
  }
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {
    return fail(error, "not JSON: " + without_exception_tag(e.what()));
  }
  if (!j.is_object()) return fail(error, "expected a JSON object, got " + echo(j));
  return j;
}

Result<std::string> parse_verb(const json& j, std::string* error) {
  const auto it = j.find("verb");
  if (it == j.end()) {
    return fail(error, "verb: expected one of " + std::string(kVerbList) + " (got nothing)");
  }
  if (!it->is_string() || !known_verb(it->get_ref<const std::string&>())) {
    return fail(error,
                "verb: expected one of " + std::string(kVerbList) + " (got " + echo(*it) + ")");
  }
  return it->get<std::string>();
}

Result<void> check_add(json& j, std::string* error) {
  const auto view = j.find("view");
  if (view == j.end() || !view->is_object()) return fail(error, "view: expected an object");
  const auto source = j.find("source");
  if (source == j.end()) {
    j["source"] = "<request>";
  } else if (!source->is_string()) {
    return fail(error, "source: expected a string");
  } else if (*source == "-") {
    *source = "<stdin>";
  }
  return Ok();
}

Result<void> check_rm(const json& j, std::string* error) {
  const auto name = j.find("name");
  if (name == j.end() || !name->is_string()) return fail(error, "name: expected a string");
  if (name->get_ref<const std::string&>().empty()) return fail(error, "name: must not be empty");
  return Ok();
}

}  // namespace

Result<Request> parse_request(std::string_view line, std::string* error) {
  auto j = parse_object(line, error);
  if (!j) return j.error();
  auto verb = parse_verb(*j, error);
  if (!verb) return verb.error();
  if (*verb == "add") {
    if (auto r = check_add(*j, error); !r) return r.error();
  } else if (*verb == "rm") {
    if (auto r = check_rm(*j, error); !r) return r.error();
  }
  return Request{std::move(*verb), std::move(*j)};
}

std::string overflow_error_text(size_t max_line) {
  return "request over " + std::to_string(max_line) + " bytes";
}

std::string to_line(const json& value) {
  std::string s = value.dump(-1, ' ', false, json::error_handler_t::replace);
  s.push_back('\n');
  return s;
}

std::string error_line(const std::string& text) {
  return to_line(json{{"ok", false}, {"error", text}});
}

size_t json_depth(std::string_view text, size_t limit) {
  size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

void LineReader::feed(std::string_view bytes) {
  while (!bytes.empty() && !overflow_) {
    const size_t nl = bytes.find('\n');
    const std::string_view head = bytes.substr(0, nl);
    if (partial_.size() + head.size() > max_line_) return overflow();
    if (nl == std::string_view::npos) return append_partial(head);
    std::string line;
    if (partial_.empty()) {
      line.assign(head);
    } else {
      append_partial(head);
      line.swap(partial_);
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    queued_bytes_ += line.size();
    lines_.push_back(std::move(line));
    bytes.remove_prefix(nl + 1);
  }
}

LineReader::Next LineReader::next(std::string* line) {
  if (!lines_.empty()) {
    *line = std::move(lines_.front());
    lines_.pop_front();
    queued_bytes_ -= line->size();
    return Next::kLine;
  }
  return overflow_ ? Next::kOverflow : Next::kNeedMore;
}

// Grows geometrically but never past max_line_: std::string's own growth would
// double a 600 KiB buffer to 1.2 MiB for the last few bytes of a line.
void LineReader::append_partial(std::string_view bytes) {
  const size_t need = partial_.size() + bytes.size();
  if (need > partial_.capacity()) {
    std::string grown;
    grown.reserve(std::min(std::max(need, 2 * partial_.capacity()), max_line_));
    grown.append(partial_);
    partial_.swap(grown);
  }
  partial_.append(bytes);
}

void LineReader::overflow() {
  overflow_ = true;
  std::string().swap(partial_);
}

}  // namespace pcifs::control
