#include "lspci.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "mounts.hpp"
#include "stats.hpp"

namespace pcifs::bench {
namespace {

constexpr uid_t kNobody = 65534;
constexpr int kMountTimeoutMs = 20000;

std::vector<std::string> over(const std::string& path) {
  return {"-A", "linux-sysfs", "-O", "sysfs.path=" + path, "-vvv", "-xxxx"};
}

}  // namespace

std::vector<std::string> list_devices(const std::string& root) {
  std::vector<std::string> out;
  DIR* d = opendir((root + "/devices").c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') out.emplace_back(e->d_name);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// Runs lspci with `args`, as `uid` (0: unchanged), capturing stdout.
LspciRun run_lspci(const std::vector<std::string>& args, uid_t uid) {
  LspciRun r;
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return r;
  std::vector<std::string> all = {"lspci"};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  argv.reserve(all.size() + 1);
  for (auto& s : all) argv.push_back(s.data());
  argv.push_back(nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], 1);
    const int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, 2);  // "Unable to load libkmod resources" and the like
    if (uid != 0 && (setgid(uid) != 0 || setuid(uid) != 0)) _exit(126);
    execvp("lspci", argv.data());
    _exit(127);
  }
  close(pipefd[1]);
  if (pid < 0) {
    close(pipefd[0]);
    return r;
  }
  char buf[65536];
  for (ssize_t n; (n = read(pipefd[0], buf, sizeof buf)) > 0;)
    r.out.append(buf, static_cast<size_t>(n));
  close(pipefd[0]);
  const int status = wait_child(pid);
  r.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  r.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  return r;
}

int run_lspci_bench(const LspciBenchArgs& a) {
  const auto devices = list_devices(a.root);
  if (devices.empty()) {
    std::fprintf(stderr, "pcifs-bench --lspci: no devices under %s/devices: nothing to compare\n",
                 a.root.c_str());
    return 77;
  }
  if (!run_lspci({"--version"}, 0).ok) {
    std::fprintf(stderr, "pcifs-bench --lspci: lspci not found (Debian: pciutils)\n");
    return 77;
  }
  std::string error;
  const std::string backend = a.root == "/sys/bus/pci" ? "sysfs" : "sysfs:" + a.root;
  auto daemon = BenchMount::start_pcifs(a.pcifs, &error, backend,
                                        "devices/" + devices.front() + "/config", a.transport);
  if (!daemon || !daemon->wait_ready(kMountTimeoutMs, &error)) {
    std::fprintf(stderr, "pcifs-bench --lspci: %s\n", error.c_str());
    return 1;
  }
  // nobody must be able to reach the mountpoint inside the bench's temp dir.
  const std::string& mnt = daemon->mountpoint();
  chmod(mnt.substr(0, mnt.rfind('/')).c_str(), 0755);

  const auto sys_args = over(a.root);
  const auto mnt_args = over(mnt);
  // Same bytes first: a faster wrong answer is no answer.
  const LspciRun sys0 = run_lspci(sys_args, 0), mnt0 = run_lspci(mnt_args, 0);
  const LspciRun nobody0 = run_lspci(mnt_args, kNobody);
  const bool same_root = sys0.ok && mnt0.ok && sys0.out == mnt0.out;
  const bool same_nobody = nobody0.ok && sys0.out == nobody0.out;

  std::vector<double> sys_ms, mnt_ms;
  for (unsigned r = 0; r < a.rounds && !stop_requested(); ++r) {
    for (unsigned k = 0; k < 2; ++k) {
      const bool sys_side = (r + k) % 2 == 0;
      const LspciRun run = run_lspci(sys_side ? sys_args : mnt_args, 0);
      if (!run.ok) {
        std::fprintf(stderr, "pcifs-bench --lspci: lspci failed over %s\n",
                     sys_side ? a.root.c_str() : mnt.c_str());
        return 1;
      }
      (sys_side ? sys_ms : mnt_ms).push_back(run.ms);
    }
  }
  daemon->stop();
  const double ratio_med = median(mnt_ms) / median(sys_ms);
  const double ratio_best = best(mnt_ms) / best(sys_ms);
  if (a.json) {
    std::printf(
        "{\"devices\": %zu, \"rounds\": %zu, \"sysfs_ms\": {\"median\": %.3f, \"best\": %.3f}, "
        "\"mount_ms\": {\"median\": %.3f, \"best\": %.3f}, \"ratio_median\": %.3f, "
        "\"ratio_best\": %.3f, \"identical_root\": %s, \"identical_nobody\": %s}\n",
        devices.size(), sys_ms.size(), median(sys_ms), best(sys_ms), median(mnt_ms), best(mnt_ms),
        ratio_med, ratio_best, same_root ? "true" : "false", same_nobody ? "true" : "false");
  } else {
    std::printf("lspci -vvv -xxxx, %zu devices under %s, %zu rounds (alternating)\n",
                devices.size(), a.root.c_str(), sys_ms.size());
    std::printf("  %-34s %10s %10s\n", "", "median ms", "best ms");
    std::printf("  %-34s %10.2f %10.2f\n", ("over " + a.root).c_str(), median(sys_ms),
                best(sys_ms));
    std::printf("  %-34s %10.2f %10.2f\n", "over the pcifs mount", median(mnt_ms), best(mnt_ms));
    std::printf("  %-34s %10.3f %10.3f   (<= 1: the mount is at least as fast)\n",
                "ratio mount / sysfs", ratio_med, ratio_best);
    std::printf("  identical output: root %s, nobody over the mount %s\n", same_root ? "yes" : "NO",
                same_nobody ? "yes" : "NO");
  }
  return same_root && same_nobody ? 0 : 1;
}

}  // namespace pcifs::bench
