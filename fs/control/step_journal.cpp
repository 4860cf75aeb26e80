// The step journal's files (step_journal.hpp).
#include "control/step_journal.hpp"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "control/state_dir.hpp"

namespace pcifs::control {
namespace {

constexpr char kMagic[] = "pcifs-step 1";
constexpr size_t kBytesPerLine = 32;
constexpr size_t kMaxConfig = 4096;

std::string root_hash(const std::string& root) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64
  for (char c : root) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string hex_line(const std::vector<uint8_t>& bytes, size_t from) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string line;
  for (size_t i = from; i < bytes.size() && i < from + kBytesPerLine; ++i) {
    line += kDigits[bytes[i] >> 4];
    line += kDigits[bytes[i] & 0xf];
  }
  return line;
}

// "KEY VALUE" with exactly this key: the value, else nullopt.
std::optional<std::string> field(std::istream& in, std::string_view key) {
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  if (line.size() <= key.size() || line.compare(0, key.size(), key) != 0 || line[key.size()] != ' ')
    return std::nullopt;
  return line.substr(key.size() + 1);
}

template <typename T>
std::optional<T> number(std::string_view t, int base) {
  if (base == 16) {
    if (!t.starts_with("0x")) return std::nullopt;
    t.remove_prefix(2);
  }
  T v{};
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v, base);
  if (ec != std::errc() || end != t.data() + t.size() || t.empty()) return std::nullopt;
  return v;
}

bool read_hex(std::istream& in, size_t n, std::vector<uint8_t>& out) {
  std::string line;
  while (out.size() < n) {
    if (!std::getline(in, line)) return false;
    const size_t want = std::min(kBytesPerLine, n - out.size());
    if (line.size() != 2 * want) return false;
    for (size_t i = 0; i < line.size(); i += 2) {
      uint8_t v = 0;
      auto [end, ec] = std::from_chars(line.data() + i, line.data() + i + 2, v, 16);
      if (ec != std::errc() || end != line.data() + i + 2) return false;
      out.push_back(v);
    }
  }
  return true;
}

}  // namespace

std::string format_step_record(const std::string& root, const Bdf& bdf, const StepRecord& rec) {
  std::string t = std::string(kMagic) + "\n";
  t += "root " + root + "\n";
  t += "device " + bdf.str() + "\n";
  t += "step " + std::string(to_string(rec.step)) + "\n";
  t += std::string("rom-decode-off ") + (rec.rom_decode_off ? "1" : "0") + "\n";
  if (rec.command) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%04x", static_cast<unsigned>(*rec.command));
    t += std::string("command ") + buf + "\n";
  } else {
    t += "command -\n";
  }
  t += "config " + std::to_string(rec.config.size()) + "\n";
  for (size_t i = 0; i < rec.config.size(); i += kBytesPerLine) t += hex_line(rec.config, i) + "\n";
  return t + "end\n";
}

std::optional<StepRecord> parse_step_record(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line) || line != kMagic) return std::nullopt;
  auto root = field(in, "root");
  auto device = field(in, "device");
  if (!root || !device || !Bdf::parse(*device)) return std::nullopt;
  auto step_name = field(in, "step");
  auto step = step_name ? parse_step_kind(*step_name) : std::nullopt;
  auto rom = field(in, "rom-decode-off");
  auto command = field(in, "command");
  auto size_text = field(in, "config");
  if (!step || !rom || (*rom != "0" && *rom != "1") || !command || !size_text) return std::nullopt;
  StepRecord rec;
  rec.step = *step;
  rec.rom_decode_off = *rom == "1";
  if (*command != "-") {
    auto c = number<uint16_t>(*command, 16);
    if (!c) return std::nullopt;
    rec.command = *c;
  }
  auto size = number<size_t>(*size_text, 10);
  if (!size || *size > kMaxConfig || !read_hex(in, *size, rec.config)) return std::nullopt;
  if (!std::getline(in, line) || line != "end" || std::getline(in, line)) return std::nullopt;
  return rec;
}

std::string StepJournalDir::path_of(const std::string& root, const Bdf& bdf) const {
  return dir_ + "/" + bdf.str() + "." + root_hash(root) + ".step";
}

Result<void> StepJournalDir::record(const std::string& root, const Bdf& bdf,
                                    const StepRecord& rec) {
  const std::string text = format_step_record(root, bdf, rec);
  Result<void> r = Ok();
  // Twice: a clear() of another device may remove the (then empty) directory
  // between our mkdir and our write.
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) return Errno(errno);
    r = write_atomically(path_of(root, bdf), text, 0600, nullptr);
    if (r || r.error() != Errno(ENOENT)) return r;
  }
  return r;
}

Result<void> StepJournalDir::clear(const std::string& root, const Bdf& bdf) {
  if (::unlink(path_of(root, bdf).c_str()) != 0 && errno != ENOENT) return Errno(errno);
  ::rmdir(dir_.c_str());  // only when empty: nothing left behind by a clean daemon
  return Ok();
}

Result<std::optional<StepRecord>> StepJournalDir::pending(const std::string& root, const Bdf& bdf) {
  const std::string path = path_of(root, bdf);
  std::ifstream in(path);
  if (!in) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) return std::optional<StepRecord>();
    return Errno(EIO);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  auto rec = parse_step_record(ss.str());
  if (!rec) {
    spdlog::error("{}: step record {} cannot be read: remove it to serve the device as found",
                  bdf.str(), path);
    return Errno(EBADMSG);
  }
  return std::optional<StepRecord>(std::move(*rec));
}

}  // namespace pcifs::control
