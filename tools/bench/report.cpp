// The table and the JSON of pcifs-bench (see report.hpp).
#include "report.hpp"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
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

void print_notes(const RunInfo& info, const Observations obs[2]) {
  const Observations& fl = obs[kFloor];
  std::printf("\nnotes:\n");
  std::printf("  floor: poll handler like pcifs's (FUSE_POLL per io_uring read on both): %s\n",
              info.floor_poll ? "yes" : "no (--floor-no-poll)");
  if (fl.bulk_preads > 0) {
    std::printf(
        "  bulk: the kernel sent %.1f FUSE_READ(s) per 1 MiB pread, the largest %llu KiB (seen "
        "by the floor; pcifs negotiates the same max_pages)\n",
        static_cast<double>(fl.bulk_fuse_reads) / static_cast<double>(fl.bulk_preads),
        static_cast<unsigned long long>(fl.bulk_max_request / 1024));
  }
  const Observations& pc = obs[kPcifs];
  if (pc.mmap_maps_checked && fl.mmap_maps_checked) {
    std::printf(
        "  mmap: page cache empty at every fresh map: %s; every touched page faulted in: %s\n",
        yes_no(pc.mmap_resident_at_map + fl.mmap_resident_at_map == 0),
        yes_no(pc.mmap_not_faulted + fl.mmap_not_faulted == 0));
  }
  if (pc.quiesces_checked && fl.quiesces_checked) {
    std::printf("  quiesce dropped the mapped pages: pcifs %s, floor %s\n",
                yes_no(pc.quiesce_resident_after == 0), yes_no(fl.quiesce_resident_after == 0));
  }
  if (pc.rings_checked && fl.rings_checked) {
    std::printf("  io_uring QD32: 32 io-wq workers per ring: %s\n",
                yes_no(pc.iowq_workers_raised && fl.iowq_workers_raised));
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

}  // namespace

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double ratio(const Figure& f) {
  return cost_ratio(f, median(f.samples[kPcifs]), median(f.samples[kFloor]));
}

double best_ratio(const Figure& f) { return cost_ratio(f, best(f, kPcifs), best(f, kFloor)); }

double cpu_us_per_op(const Figure& f, int side) {
  return f.total_ops ? f.cpu_s[side] * 1e6 / f.total_ops : 0;
}

void print_table(const std::vector<Figure>& figs, const RunInfo& info, const Observations obs[2]) {
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
  std::printf(
      "(srv CPU: the server process's CPU time per operation, all threads, from "
      "/proc/PID/stat, whole rounds including untimed setup; operation = the figure's unit)\n");
  print_notes(info, obs);
}

void print_json(const std::vector<Figure>& figs, const RunInfo& info, const Observations obs[2]) {
  nlohmann::json out;
  out["rounds"] = info.rounds;
  out["loadavg"] = info.loadavg;
  out["cpus"] = info.cpus;
  out["floor_poll"] = info.floor_poll;
  out["ratio"] = "pcifs cost / floor cost; >1 means pcifs is slower";
  out["figures"] = nlohmann::json::array();
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
    out["figures"].push_back(j);
  }
  out["observations"] = {{"pcifs", observations_json(obs[kPcifs])},
                         {"floor", observations_json(obs[kFloor])}};
  std::printf("%s\n", out.dump(2).c_str());
}

}  // namespace pcifs::bench
