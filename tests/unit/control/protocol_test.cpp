// The control protocol (fs/control/protocol.hpp): request parsing and its
// error messages, lines across reads, and a bounded buffer for a line over
// the limit [S16].
#include "control/protocol.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace pcifs::control {
namespace {

using nlohmann::json;

struct BadRequest {
  std::string line;
  std::string error;  // the start of the message
};

class ParseErrorTest : public ::testing::TestWithParam<BadRequest> {};

TEST_P(ParseErrorTest, ExplainsWhatIsWrong) {
  std::string error;
  auto r = parse_request(GetParam().line, &error);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(EINVAL));
  EXPECT_EQ(error.substr(0, GetParam().error.size()), GetParam().error) << error;
}

INSTANTIATE_TEST_SUITE_P(
    Protocol, ParseErrorTest,
    ::testing::Values(
        BadRequest{"hello", "not JSON: parse error at line 1, column 1"},
        BadRequest{"", "not JSON: "}, BadRequest{"{\"verb\":", "not JSON: parse error"},
        BadRequest{"{\"verb\":\"ls\"} trailing", "not JSON: "},
        BadRequest{"\"ls\"", "expected a JSON object, got \"ls\""},
        BadRequest{"[1,2]", "expected a JSON object, got [1,2]"},
        BadRequest{"{}",
                   "verb: expected one of add, rm, ls, devices, locks, watch, ping (got nothing)"},
        BadRequest{"{\"verb\":\"x\"}",
                   "verb: expected one of add, rm, ls, devices, locks, watch, ping (got \"x\")"},
        BadRequest{"{\"verb\":7}",
                   "verb: expected one of add, rm, ls, devices, locks, watch, ping (got 7)"},
        BadRequest{"{\"verb\":\"LS\"}",
                   "verb: expected one of add, rm, ls, devices, locks, watch, ping (got \"LS\")"},
        BadRequest{"{\"verb\":\"rm\"}", "name: expected a string"},
        BadRequest{"{\"verb\":\"rm\",\"name\":3}", "name: expected a string"},
        BadRequest{"{\"verb\":\"rm\",\"name\":\"\"}", "name: must not be empty"},
        BadRequest{"{\"verb\":\"add\"}", "view: expected an object"},
        BadRequest{"{\"verb\":\"add\",\"view\":[]}", "view: expected an object"},
        BadRequest{"{\"verb\":\"add\",\"view\":{},\"source\":1}", "source: expected a string"},
        BadRequest{"{\"verb\":\"ls\",\"x\":\"\xff\"}", "not JSON: "},
        BadRequest{std::string(100, '['), "not JSON: nested deeper than 64 levels"}));

TEST(ProtocolTest, ALongVerbIsQuotedShort) {
  std::string error;
  const std::string line = "{\"verb\":\"" + std::string(1000, 'v') + "\"}";
  EXPECT_FALSE(parse_request(line, &error).ok());
  EXPECT_LT(error.size(), 200u) << error;
}

TEST(ProtocolTest, ALineOverTheLimitIsE2big) {
  std::string error;
  auto r = parse_request(std::string(kMaxLine + 1, ' '), &error);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), Errno(E2BIG));
  EXPECT_EQ(error, "request over 1048576 bytes");
}

TEST(ProtocolTest, ValidRequests) {
  std::string error;
  for (const char* verb : {"ls", "devices", "locks", "watch", "ping"}) {
    auto r = parse_request(json{{"verb", verb}}.dump(), &error);
    ASSERT_TRUE(r.ok()) << error;
    EXPECT_EQ(r->verb, verb);
  }
  auto rm = parse_request(R"({"verb":"rm","name":"c1","future":1})", &error);
  ASSERT_TRUE(rm.ok()) << error;
  EXPECT_EQ(rm->body["name"], "c1");
}

TEST(ProtocolTest, AddNormalisesItsSource) {
  std::string error;
  auto file = parse_request(R"({"verb":"add","source":"c1.json","view":{"uid":1}})", &error);
  ASSERT_TRUE(file.ok()) << error;
  EXPECT_EQ(file->body["source"], "c1.json");
  EXPECT_EQ(file->body["view"]["uid"], 1);
  auto stdin_ = parse_request(R"({"verb":"add","source":"-","view":{}})", &error);
  ASSERT_TRUE(stdin_.ok()) << error;
  EXPECT_EQ(stdin_->body["source"], "<stdin>");
  auto none = parse_request(R"({"verb":"add","view":{}})", &error);
  ASSERT_TRUE(none.ok()) << error;
  EXPECT_EQ(none->body["source"], "<request>");
}

TEST(ProtocolTest, LinesAreCompactJsonWithInvalidUtf8Replaced) {
  EXPECT_EQ(error_line("no view named x"), "{\"error\":\"no view named x\",\"ok\":false}\n");
  const std::string line = to_line(json{{"s", std::string("a\xff")}});
  EXPECT_EQ(line, "{\"s\":\"a\xEF\xBF\xBD\"}\n");
}

TEST(ProtocolTest, JsonDepthSkipsStrings) {
  EXPECT_EQ(json_depth("{}"), 1u);
  EXPECT_EQ(json_depth(R"({"a":[{"b":"[[[[\"[[["}]})"), 3u);
  EXPECT_EQ(json_depth(std::string(1000, '['), 64), 65u);  // stops counting past the limit
  EXPECT_EQ(json_depth("]]]{"), 1u);
}

std::vector<std::string> drain(LineReader& r) {
  std::vector<std::string> out;
  std::string line;
  while (r.next(&line) == LineReader::Next::kLine) out.push_back(line);
  return out;
}

TEST(LineReaderTest, LinesSpanReadsAndReadsHoldSeveralLines) {
  LineReader r;
  r.feed("{\"verb\":");
  EXPECT_TRUE(drain(r).empty());
  r.feed("\"ls\"}\n{\"verb\"");
  EXPECT_EQ(drain(r), std::vector<std::string>{"{\"verb\":\"ls\"}"});
  r.feed(":\"ping\"}\r\n\na\nb");
  EXPECT_EQ(drain(r), (std::vector<std::string>{"{\"verb\":\"ping\"}", "", "a"}));
  r.feed("\n");
  EXPECT_EQ(drain(r), std::vector<std::string>{"b"});
  EXPECT_EQ(r.partial_size(), 0u);
  EXPECT_FALSE(r.overflowed());
}

TEST(LineReaderTest, ByteAtATime) {
  LineReader r;
  std::string line;
  for (char c : std::string("ab\ncd\n")) r.feed(std::string_view(&c, 1));
  EXPECT_EQ(drain(r), (std::vector<std::string>{"ab", "cd"}));
}

TEST(LineReaderTest, ALineOfExactlyTheLimitIsALine) {
  LineReader r(16);
  r.feed(std::string(16, 'x') + "\n");
  EXPECT_EQ(drain(r), std::vector<std::string>{std::string(16, 'x')});
  r.feed(std::string(17, 'x') + "\n");
  std::string line;
  EXPECT_EQ(r.next(&line), LineReader::Next::kOverflow);
}

// Lines before the long one are still served; overflow is final.
TEST(LineReaderTest, OverflowComesAfterTheLinesBeforeIt) {
  LineReader r(8);
  r.feed("ok\n0123456789");
  std::string line;
  ASSERT_EQ(r.next(&line), LineReader::Next::kLine);
  EXPECT_EQ(line, "ok");
  EXPECT_EQ(r.next(&line), LineReader::Next::kOverflow);
  r.feed("\nmore\n");
  EXPECT_EQ(r.next(&line), LineReader::Next::kOverflow);
  EXPECT_EQ(r.partial_capacity(), std::string().capacity());
}

// 100 MB without a newline, in 64 KiB reads: the reader never holds more than
// the limit, and says so once the line passes it.
TEST(LineReaderTest, AHundredMegabyteLineIsNeverBuffered) {
  const std::string chunk(64 * 1024, 'x');
  LineReader r;
  size_t fed = 0, most = 0;
  std::string line;
  LineReader::Next state = LineReader::Next::kNeedMore;
  while (fed < 100u * 1000 * 1000 && state == LineReader::Next::kNeedMore) {
    r.feed(chunk);
    fed += chunk.size();
    most = std::max(most, r.partial_capacity() + r.queued_bytes());
    state = r.next(&line);
  }
  EXPECT_EQ(state, LineReader::Next::kOverflow);
  EXPECT_LE(fed, kMaxLine + chunk.size());
  EXPECT_LE(most, kMaxLine);
  // Feeding the rest costs nothing.
  for (; fed < 100u * 1000 * 1000; fed += chunk.size()) r.feed(chunk);
  EXPECT_EQ(r.partial_capacity(), std::string().capacity());
}

}  // namespace
}  // namespace pcifs::control
