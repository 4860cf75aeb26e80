// The table and the JSON of pcifs-bench (see report.hpp).
#include "report.hpp"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace pcifs::bench {
namespace {

double best(const Figure& f, int side) {
  const auto& v = f.samples[side];
  if (v.empty()) return 0;
  return f.rate ? *std::max_element(v.begin(), v.end()) : *std::min_element(v.begin(), v.end());
}

double cost_ratio(const Figure& f, double pcifs, double floor) {
  return f.rate ? floor / pcifs : pcifs / floor;
}

const char* yes_no(bool b) { return b ? "yes" : "NO"; }

std::string target_text(const Figure& f) {
  if (!f.target) return "-";
  char t[64];
  std::snprintf(t, sizeof t, "<= %.2fx %s", *f.target, ratio(f) <= *f.target ? "met" : "NOT met");
  return t;
}

// What holds for the whole run, printed once.
void print_run_notes(const RunInfo& info) {
  std::printf("\nnotes:\n");
  std::printf("  floor: poll handler like pcifs's (FUSE_POLL per io_uring read on both): %s\n",
              info.floor_poll ? "yes" : "no (--floor-no-poll)");
  if (!info.transport_note.empty()) std::printf("  %s\n", info.transport_note.c_str());
}

void print_block_notes(const Block& b) {
  const Observations* obs = b.obs;
  const Observations& fl = obs[kFloor];
  const char* t = transport_server_name(b.transport);
  if (b.transport == BenchTransport::kUring) {
    std::printf("  %s: the floor took %llu requests over its rings\n", t,
                static_cast<unsigned long long>(b.floor_uring_requests));
  }
  if (fl.bulk_preads > 0) {
    std::printf(
        "  %s: bulk: the kernel sent %.1f FUSE_READ(s) per 1 MiB pread, the largest %llu KiB "
        "(seen by the floor; pcifs negotiates the same max_pages)\n",
        t, static_cast<double>(fl.bulk_fuse_reads) / static_cast<double>(fl.bulk_preads),
        static_cast<unsigned long long>(fl.bulk_max_request / 1024));
  }
  const Observations& pc = obs[kPcifs];
  if (pc.mmap_maps_checked && fl.mmap_maps_checked) {
    std::printf(
        "  %s: mmap: page cache empty at every fresh map: %s; every touched page faulted in: %s\n",
        t, yes_no(pc.mmap_resident_at_map + fl.mmap_resident_at_map == 0),
        yes_no(pc.mmap_not_faulted + fl.mmap_not_faulted == 0));
  }
  if (pc.quiesces_checked && fl.quiesces_checked) {
    std::printf("  %s: quiesce dropped the mapped pages: pcifs %s, floor %s\n", t,
                yes_no(pc.quiesce_resident_after == 0), yes_no(fl.quiesce_resident_after == 0));
  }
  if (pc.rings_checked && fl.rings_checked) {
    std::printf("  %s: io_uring QD32: 32 io-wq workers per ring: %s\n", t,
                yes_no(pc.iowq_workers_raised && fl.iowq_workers_raised));
  }
}

// Issue 13 section 2: the same figure on io_uring against /dev/fuse, per
// server, from the same run. `target` bounds pcifs's ratio.
struct Cross {
  const char* figure;
  const char* name;
  const char* label;
  std::optional<double> target;
};
constexpr Cross kCross[] = {
    {"config_read_qd1", "config_read_qd1_uring_over_dev", "config read 4 B, QD1: uring / dev", 0.5},
};

const Figure* find_figure(const std::vector<Block>& blocks, BenchTransport t, const char* name) {
  for (const auto& b : blocks) {
    if (b.transport != t) continue;
    for (const auto& f : b.figs) {
      if (std::string(f.name) == name) return &f;
    }
  }
  return nullptr;
}

struct CrossResult {
  const Cross* cross;
  const Figure* dev;
  const Figure* uring;
  double ratio[2];  // [kPcifs], [kFloor]: uring cost / dev cost
};

std::vector<CrossResult> cross_results(const std::vector<Block>& blocks) {
  std::vector<CrossResult> out;
  for (const auto& c : kCross) {
    const Figure* dev = find_figure(blocks, BenchTransport::kDev, c.figure);
    const Figure* uring = find_figure(blocks, BenchTransport::kUring, c.figure);
    if (!dev || !uring) continue;
    CrossResult r{&c, dev, uring, {}};
    for (int side : {kPcifs, kFloor}) {
      r.ratio[side] = cost_ratio(*dev, median(uring->samples[side]), median(dev->samples[side]));
    }
    out.push_back(r);
  }
  return out;
}

void print_cross(const std::vector<Block>& blocks) {
  const auto results = cross_results(blocks);
  if (results.empty()) return;
  std::printf(
      "\n== across transports, same run: ratio = io_uring cost / /dev/fuse cost (<1: io_uring is "
      "cheaper) ==\n");
  std::printf("%-35s %-6s %9s %9s %7s %9s %9s %7s  %s\n", "figure", "unit", "pcifs dev", "pcifs ur",
              "ratio", "floor dev", "floor ur", "ratio", "target (pcifs)");
  for (const auto& r : results) {
    std::string target = "-";
    if (r.cross->target) {
      char t[64];
      std::snprintf(t, sizeof t, "<= %.2fx %s", *r.cross->target,
                    r.ratio[kPcifs] <= *r.cross->target ? "met" : "NOT met");
      target = t;
    }
    std::printf("%-35s %-6s %9.2f %9.2f %6.2fx %9.2f %9.2f %6.2fx  %s\n", r.cross->label,
                r.dev->unit, median(r.dev->samples[kPcifs]), median(r.uring->samples[kPcifs]),
                r.ratio[kPcifs], median(r.dev->samples[kFloor]), median(r.uring->samples[kFloor]),
                r.ratio[kFloor], target.c_str());
  }
}

nlohmann::json observations_json(const Observations& o) {
  return {{"bulk_fuse_reads", o.bulk_fuse_reads},
          {"bulk_preads", o.bulk_preads},
          {"bulk_max_request", o.bulk_max_request},
          {"mmap_resident_at_map", o.mmap_resident_at_map},
          {"mmap_not_faulted", o.mmap_not_faulted},
          {"quiesce_resident_after", o.quiesce_resident_after},
          {"iowq_workers_raised", o.iowq_workers_raised},
          {"mmap_maps_checked", o.mmap_maps_checked},
          {"quiesces_checked", o.quiesces_checked},
          {"rings_checked", o.rings_checked}};
}

// One transport's figures, as the table had them before there were two.
void print_block(const Block& b) {
  const auto& figs = b.figs;
  std::printf("\n%-31s %-8s %11s %11s %7s  %s\n", "figure", "unit", "pcifs", "floor", "ratio",
              "target");
  for (const auto& f : figs) {
    std::printf("%-31s %-8s %11.2f %11.2f %6.2fx  %s\n", f.label, f.unit, median(f.samples[kPcifs]),
                median(f.samples[kFloor]), ratio(f), target_text(f).c_str());
  }
  std::printf("\n%-31s %11s %11s %7s  %13s %13s %7s\n", "diagnostics", "best pcifs", "best floor",
              "ratio", "srv CPU pcifs", "srv CPU floor", "ratio");
  for (const auto& f : figs) {
    const double cp = cpu_us_per_op(f, kPcifs), cf = cpu_us_per_op(f, kFloor);
    char cpu_ratio[16] = "      -";  // CPU time comes in clock ticks: too few, no ratio
    if (cp > 0 && cf > 0) std::snprintf(cpu_ratio, sizeof cpu_ratio, "%6.2fx", cp / cf);
    std::printf("%-31s %11.2f %11.2f %6.2fx  %10.2f us %10.2f us %s\n", f.label, best(f, kPcifs),
                best(f, kFloor), best_ratio(f), cp, cf, cpu_ratio);
  }
}

nlohmann::json figures_json(const std::vector<Figure>& figs) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& f : figs) {
    nlohmann::json j = {
        {"name", f.name},
        {"label", f.label},
        {"unit", f.unit},
        {"higher_is_better", f.rate},
        {"pcifs", median(f.samples[kPcifs])},
        {"floor", median(f.samples[kFloor])},
        {"ratio", ratio(f)},
        {"best_ratio", best_ratio(f)},
        {"server_cpu_us_per_op",
         {{"pcifs", cpu_us_per_op(f, kPcifs)}, {"floor", cpu_us_per_op(f, kFloor)}}},
        {"samples", {{"pcifs", f.samples[kPcifs]}, {"floor", f.samples[kFloor]}}}};
    if (f.target) {
      j["target"] = *f.target;
      j["met"] = ratio(f) <= *f.target;
    }
    out.push_back(j);
  }
  return out;
}

nlohmann::json cross_json(const std::vector<Block>& blocks) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : cross_results(blocks)) {
    nlohmann::json j = {
        {"name", r.cross->name},
        {"label", r.cross->label},
        {"figure", r.cross->figure},
        {"ratio", "uring cost / dev cost, same server, same run; <1 means io_uring is cheaper"},
        {"pcifs", r.ratio[kPcifs]},
        {"floor", r.ratio[kFloor]},
        {"dev",
         {{"pcifs", median(r.dev->samples[kPcifs])}, {"floor", median(r.dev->samples[kFloor])}}},
        {"uring",
         {{"pcifs", median(r.uring->samples[kPcifs])},
          {"floor", median(r.uring->samples[kFloor])}}}};
    if (r.cross->target) {
      j["target"] = *r.cross->target;
      j["met"] = r.ratio[kPcifs] <= *r.cross->target;
    }
    out.push_back(j);
  }
  return out;
}

}  // namespace

double ratio(const Figure& f) {
  return cost_ratio(f, median(f.samples[kPcifs]), median(f.samples[kFloor]));
}

double best_ratio(const Figure& f) { return cost_ratio(f, best(f, kPcifs), best(f, kFloor)); }

double cpu_us_per_op(const Figure& f, int side) {
  return f.total_ops ? f.cpu_s[side] * 1e6 / f.total_ops : 0;
}

void print_table(const std::vector<Block>& blocks, const RunInfo& info) {
  std::printf(
      "pcifs-bench: median of %u rounds; ratio = pcifs cost / floor cost (times: pcifs/floor, "
      "rates: floor/pcifs), so >1 means pcifs is slower.\n",
      info.rounds);
  if (info.loadavg > 0.5 * static_cast<double>(info.cpus)) {
    std::printf(
        "warning: load average %.1f on %ld CPUs at the start: wall-clock figures are noisy; "
        "compare 'best' and the CPU columns.\n",
        info.loadavg, info.cpus);
  }
  for (const auto& b : blocks) {
    std::printf("\n== transport %s: pcifs --transport=%s against the floor on %s ==\n",
                transport_arg(b.transport), transport_arg(b.transport),
                transport_server_name(b.transport));
    print_block(b);
  }
  std::printf(
      "(srv CPU: the server process's CPU time per operation, all threads, from "
      "/proc/PID/stat, whole rounds including untimed setup; operation = the figure's unit)\n");
  print_cross(blocks);
  print_run_notes(info);
  for (const auto& b : blocks) print_block_notes(b);
}

void print_json(const std::vector<Block>& blocks, const RunInfo& info) {
  nlohmann::json out;
  out["rounds"] = info.rounds;
  out["loadavg"] = info.loadavg;
  out["cpus"] = info.cpus;
  out["floor_poll"] = info.floor_poll;
  out["ratio"] = "pcifs cost / floor cost; >1 means pcifs is slower";
  if (!info.transport_note.empty()) out["transport_note"] = info.transport_note;
  out["transports"] = nlohmann::json::array();
  out["blocks"] = nlohmann::json::array();
  for (const auto& b : blocks) {
    out["transports"].push_back(transport_arg(b.transport));
    nlohmann::json j = {{"transport", transport_arg(b.transport)},
                        {"server_transport", transport_server_name(b.transport)},
                        {"figures", figures_json(b.figs)},
                        {"observations",
                         {{"pcifs", observations_json(b.obs[kPcifs])},
                          {"floor", observations_json(b.obs[kFloor])}}}};
    if (b.transport == BenchTransport::kUring) j["floor_uring_requests"] = b.floor_uring_requests;
    out["blocks"].push_back(j);
    if (b.transport == BenchTransport::kDev) {
      // As before there were blocks: the /dev/fuse figures at the top level.
      out["figures"] = j["figures"];
      out["observations"] = j["observations"];
    }
  }
  out["cross_transport"] = cross_json(blocks);
  std::printf("%s\n", out.dump(2).c_str());
}

}  // namespace pcifs::bench
