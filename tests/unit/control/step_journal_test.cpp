// The step journal's files (fs/control/step_journal.hpp): the text format
// round-trips, anything malformed is refused (EBADMSG), a record is one file
// per device and root, and a cleared journal leaves no file and no directory.
#include "control/step_journal.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "unit/control/control_test_util.hpp"

namespace pcifs::control {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

const Bdf kBdf = *Bdf::parse("0000:03:00.0");

StepRecord sample() {
  StepRecord r;
  r.step = StepKind::kPowerDown;
  r.rom_decode_off = true;
  r.config.resize(256);
  for (size_t i = 0; i < r.config.size(); ++i) r.config[i] = static_cast<uint8_t>(i * 7);
  r.command = 0x0406;
  return r;
}

TEST(StepRecordFormatTest, RoundTrips) {
  for (StepKind k : {StepKind::kRomCapture, StepKind::kPowerDown, StepKind::kPowerUp,
                     StepKind::kReset, StepKind::kHandover}) {
    StepRecord r = sample();
    r.step = k;
    auto back = parse_step_record(format_step_record("/sys/bus/pci", kBdf, r));
    ASSERT_TRUE(back.has_value()) << to_string(k);
    EXPECT_EQ(*back, r);
  }
  StepRecord rom;  // no config, no command
  rom.rom_decode_off = true;
  auto back = parse_step_record(format_step_record("/sys/bus/pci", kBdf, rom));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, rom);
  StepRecord odd = sample();
  odd.config.resize(4096 - 5);  // a last line shorter than the others
  back = parse_step_record(format_step_record("/r", kBdf, odd));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, odd);
}

TEST(StepRecordFormatTest, IsTheDocumentedText) {
  StepRecord r;
  r.step = StepKind::kPowerUp;
  r.config = {0x86, 0x80, 0x0a};
  r.command = 0x0006;
  EXPECT_EQ(format_step_record("/sys/bus/pci", kBdf, r),
            "pcifs-step 1\nroot /sys/bus/pci\ndevice 0000:03:00.0\nstep power-up\n"
            "rom-decode-off 0\ncommand 0x0006\nconfig 3\n86800a\nend\n");
}

TEST(StepRecordFormatTest, MalformedRecordsAreRefused) {
  const std::string good = format_step_record("/r", kBdf, sample());
  ASSERT_TRUE(parse_step_record(good).has_value());
  auto replaced = [&](const std::string& from, const std::string& to) {
    std::string t = good;
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  const std::vector<std::string> bad = {
      "",
      good.substr(0, good.size() - 4),  // no "end"
      good + "more\n",
      replaced("pcifs-step 1", "pcifs-step 2"),
      replaced("step power-down", "step nap"),
      replaced("device 0000:03:00.0", "device 3"),
      replaced("rom-decode-off 1", "rom-decode-off yes"),
      replaced("command 0x0406", "command 406"),
      replaced("command 0x0406", "command 0x10000"),
      replaced("config 256", "config 257"),
      replaced("config 256", "config 255"),
      replaced("config 256", "config 99999"),
      replaced("00070e15", "0007xe15"),
  };
  for (const auto& t : bad) EXPECT_FALSE(parse_step_record(t).has_value()) << t;
}

TEST(StepJournalDirTest, RecordsPendingAndClears) {
  TempDir t;
  StepJournalDir j(t.path() + "/steps");
  auto none = j.pending("/r", kBdf);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());

  ASSERT_TRUE(j.record("/r", kBdf, sample()));
  EXPECT_TRUE(fs::exists(j.path_of("/r", kBdf)));
  struct stat st {};
  ASSERT_EQ(::stat(j.path_of("/r", kBdf).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto got = j.pending("/r", kBdf);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, sample());

  // Another root's device of the same BDF is another file.
  EXPECT_NE(j.path_of("/r", kBdf), j.path_of("/other", kBdf));
  EXPECT_FALSE(j.pending("/other", kBdf)->has_value());

  // A new record replaces the old one.
  StepRecord rom;
  rom.rom_decode_off = true;
  ASSERT_TRUE(j.record("/r", kBdf, rom));
  EXPECT_EQ(**j.pending("/r", kBdf), rom);

  ASSERT_TRUE(j.clear("/r", kBdf));
  EXPECT_FALSE(j.pending("/r", kBdf)->has_value());
  EXPECT_FALSE(fs::exists(t.path() + "/steps")) << "an empty journal directory stays behind";
  EXPECT_TRUE(j.clear("/r", kBdf)) << "clearing nothing is fine";
  // And it comes back for the next record.
  ASSERT_TRUE(j.record("/r", kBdf, rom));
  EXPECT_TRUE(j.pending("/r", kBdf)->has_value());
}

TEST(StepJournalDirTest, AnUnreadableRecordIsEbadmsg) {
  TempDir t;
  StepJournalDir j(t.path());
  ASSERT_TRUE(j.record("/r", kBdf, sample()));
  {
    std::ofstream out(j.path_of("/r", kBdf), std::ios::trunc);
    out << "pcifs-step 1\nroot /r\n";
  }
  auto got = j.pending("/r", kBdf);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error(), Errno(EBADMSG));
}

TEST(StepJournalDirTest, ARecordThatCannotBeWrittenIsAnError) {
  TempDir t;
  { std::ofstream out(t.path() + "/file"); }
  StepJournalDir j(t.path() + "/file/steps");  // a path through a regular file
  EXPECT_FALSE(j.record("/r", kBdf, sample()).ok());
}

}  // namespace
}  // namespace pcifs::control
